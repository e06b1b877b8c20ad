/*
 * png.c - PNG files for the `diffuse` command through libpng: reading any
 * PNG into an 8-bit RGB8/RGBA8 diffuse_image, reading and writing text
 * chunks (the generation metadata), and writing through a temporary file
 * that is renamed into place, so no partial file is ever visible.
 */
#include "cli.h"

#include <png.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Metadata                                                                  */
/* ------------------------------------------------------------------------ */

const char *cli_meta_get(const cli_meta *m, const char *key) {
    for (size_t i = 0; i < m->count; i++)
        if (strcmp(m->key[i], key) == 0) return m->value[i];
    return NULL;
}

int cli_meta_set(cli_meta *m, const char *key, const char *value) {
    char *v = strdup(value);
    if (!v) return -1;
    for (size_t i = 0; i < m->count; i++)
        if (strcmp(m->key[i], key) == 0) {
            free(m->value[i]);
            m->value[i] = v;
            return 0;
        }
    char *k = m->count < CLI_META_MAX ? strdup(key) : NULL;
    if (!k) {
        free(v);
        return -1;
    }
    m->key[m->count] = k;
    m->value[m->count++] = v;
    return 0;
}

void cli_meta_free(cli_meta *m) {
    for (size_t i = 0; i < m->count; i++) {
        free(m->key[i]);
        free(m->value[i]);
    }
    m->count = 0;
}

/* tEXt and zTXt hold Latin-1; iTXt holds UTF-8. Returns a UTF-8 copy. */
static char *latin1_to_utf8(const char *s, size_t len) {
    char *out = malloc(2 * len + 1), *q = out;
    if (!out) return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            *q++ = (char)c;
        } else {
            *q++ = (char)(0xc0 | (c >> 6));
            *q++ = (char)(0x80 | (c & 0x3f));
        }
    }
    *q = '\0';
    return out;
}

/* ------------------------------------------------------------------------ */
/* libpng error plumbing                                                     */
/* ------------------------------------------------------------------------ */

/* Where libpng's error callback leaves its message. */
typedef struct png_errbuf {
    char *msg;
    size_t size;
    const char *path;
} png_errbuf;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_errbuf *e = png_get_error_ptr(png);
    snprintf(e->msg, e->size, "%s: %s", e->path, msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png; /* warnings (odd colour profiles and the like) change nothing we do */
    (void)msg;
}

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errsz, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/* ------------------------------------------------------------------------ */

static int collect_text(png_structp png, png_infop info, cli_meta *meta) {
    png_textp text = NULL;
    int n = 0;
    png_get_text(png, info, &text, &n);
    for (int i = 0; i < n; i++) {
        const int utf8 = text[i].compression >= PNG_ITXT_COMPRESSION_NONE;
        const size_t len = utf8 ? text[i].itxt_length : text[i].text_length;
        char *v = utf8 ? strndup(text[i].text ? text[i].text : "", len) : latin1_to_utf8(text[i].text, len);
        int rc = v ? cli_meta_set(meta, text[i].key, v) : -1;
        free(v);
        if (rc) return -1;
    }
    return 0;
}

/* Asks libpng for 8-bit RGB or RGBA whatever the file holds. */
static void request_rgb8(png_structp png, png_infop info) {
    png_set_expand(png); /* palette -> RGB, gray < 8 bit -> 8 bit, tRNS -> alpha */
    png_set_strip_16(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

/* The libpng part of cli_png_read; longjmps out on errors. Pixel memory is
 * handed out through @data so the caller frees it on every path. */
static int read_png_stream(png_structp png, png_infop info, png_infop end, FILE *f, diffuse_image *img,
                           cli_meta *meta, uint8_t *volatile *data, png_bytep *volatile *rows) {
    png_init_io(png, f);
    png_set_user_limits(png, 16384, 16384);
    png_read_info(png, info);
    if (meta && collect_text(png, info, meta)) png_error(png, "out of memory for text chunks");
    request_rgb8(png, info);
    const uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    const int channels = png_get_channels(png, info);
    if (channels != 3 && channels != 4) png_error(png, "unexpected channel count after conversion");
    const size_t stride = (size_t)w * (size_t)channels;
    *data = malloc(stride * h);
    *rows = malloc(h * sizeof(png_bytep));
    if (!*data || !*rows) png_error(png, "out of memory for pixels");
    for (uint32_t y = 0; y < h; y++) (*rows)[y] = *data + y * stride;
    png_read_image(png, *rows);
    png_read_end(png, end);
    if (meta && collect_text(png, end, meta)) png_error(png, "out of memory for text chunks");
    if (img) {
        memset(img, 0, sizeof *img);
        img->width = w;
        img->height = h;
        img->stride = (uint32_t)stride;
        img->format = channels == 4 ? DIFFUSE_PIXEL_RGBA8 : DIFFUSE_PIXEL_RGB8;
        img->origin = DIFFUSE_ORIGIN_TOP_LEFT;
        img->color_space = DIFFUSE_COLOR_SRGB;
        img->data = *data;
        *data = NULL;
    }
    return 0;
}

int cli_png_read(const char *path, diffuse_image *img, cli_meta *meta, char *err, size_t errsz) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errsz, "%s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char sig[8];
    if (fread(sig, 1, sizeof sig, f) != sizeof sig || png_sig_cmp(sig, 0, sizeof sig)) {
        set_err(err, errsz, "%s: not a PNG file", path);
        fclose(f);
        return -1;
    }
    rewind(f);
    png_errbuf eb = {err, errsz, path};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &eb, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_infop end = info ? png_create_info_struct(png) : NULL;
    uint8_t *volatile data = NULL;
    png_bytep *volatile rows = NULL;
    volatile int rc = -1;
    if (!end) {
        set_err(err, errsz, "%s: out of memory for the PNG reader", path);
    } else if (setjmp(png_jmpbuf(png)) == 0) {
        rc = read_png_stream(png, info, end, f, img, meta, &data, &rows);
    }
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, end ? &end : NULL);
    free(data);
    free(rows);
    fclose(f);
    if (rc && meta) cli_meta_free(meta);
    return rc;
}

void cli_png_free(diffuse_image *img) {
    if (!img) return;
    free(img->data);
    img->data = NULL;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

static int is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

/* The libpng part of cli_png_write; longjmps out on errors. ASCII values
 * go in tEXt chunks, others in uncompressed iTXt (UTF-8). */
static void write_png_stream(png_structp png, png_infop info, FILE *f, const diffuse_image *img,
                             const cli_meta *meta, png_bytep *rows) {
    png_text text[CLI_META_MAX];
    memset(text, 0, sizeof text);
    for (size_t i = 0; i < meta->count; i++) {
        const int ascii = is_ascii(meta->value[i]);
        text[i].compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
        text[i].key = meta->key[i];
        text[i].text = meta->value[i];
        text[i].text_length = ascii ? strlen(meta->value[i]) : 0;
        text[i].itxt_length = ascii ? 0 : strlen(meta->value[i]);
    }
    png_init_io(png, f);
    const int color = img->format == DIFFUSE_PIXEL_RGB8 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGB_ALPHA;
    png_set_IHDR(png, info, img->width, img->height, 8, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_sRGB(png, info, PNG_sRGB_INTENT_PERCEPTUAL);
    if (meta->count) png_set_text(png, info, text, (int)meta->count);
    png_write_info(png, info);
    if (img->format == DIFFUSE_PIXEL_BGRA8) png_set_bgr(png);
    for (uint32_t y = 0; y < img->height; y++) {
        const uint32_t row = img->origin == DIFFUSE_ORIGIN_BOTTOM_LEFT ? img->height - 1 - y : y;
        rows[y] = img->data + (size_t)row * img->stride;
    }
    png_write_image(png, rows);
    png_write_end(png, info);
}

/* Creates "DIR/.NAME.XXXXXX" beside @path with the permissions a plain
 * fopen would give. Returns its descriptor, or -1 with errno set. */
static int make_temp_beside(const char *path, char *tmp, size_t size) {
    const char *slash = strrchr(path, '/');
    const int dirlen = slash ? (int)(slash - path + 1) : 0;
    if ((size_t)snprintf(tmp, size, "%.*s.%s.XXXXXX", dirlen, path, slash ? slash + 1 : path) >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) return -1;
    const mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask); /* best effort: mkstemp made it 0600 */
    return fd;
}

/* Moves @tmp to @path. Without @force, link() refuses an existing @path
 * atomically; on file systems without hard links it is check, then rename.
 * On failure the caller removes @tmp. */
static int publish(const char *tmp, const char *path, int force, char *err, size_t errsz) {
    if (!force) {
        if (link(tmp, path) == 0) {
            unlink(tmp);
            return 0;
        }
        if (errno == EEXIST || access(path, F_OK) == 0) {
            set_err(err, errsz, "%s exists; pass --force to overwrite it", path);
            return -1;
        }
    }
    if (rename(tmp, path) == 0) return 0;
    set_err(err, errsz, "%s: %s", path, strerror(errno));
    return -1;
}

int cli_png_write(const char *path, const diffuse_image *img, const cli_meta *meta, int force, char *err,
                  size_t errsz) {
    char tmp[4096];
    int fd = make_temp_beside(path, tmp, sizeof tmp);
    if (fd < 0) {
        set_err(err, errsz, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "wb");
    png_errbuf eb = {err, errsz, path};
    png_structp png = f ? png_create_write_struct(PNG_LIBPNG_VER_STRING, &eb, on_png_error, on_png_warning) : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rows = info ? malloc(img->height * sizeof(png_bytep)) : NULL;
    volatile int rc = -1;
    if (!rows) {
        set_err(err, errsz, "%s: out of memory for the PNG writer", path);
    } else if (setjmp(png_jmpbuf(png)) == 0) {
        write_png_stream(png, info, f, img, meta, rows);
        rc = 0;
    }
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    free(rows);
    if (f ? fclose(f) != 0 : close(fd) != 0) {
        if (rc == 0) set_err(err, errsz, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == 0) rc = publish(tmp, path, force, err, errsz);
    if (rc != 0) unlink(tmp);
    return rc;
}
