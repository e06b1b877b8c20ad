/*
 * safetensors.c - maps a safetensors file and validates it completely before
 * any tensor is used (see safetensors.h). The checks follow the reference
 * implementation: bounded header, strict JSON, known dtypes, offsets inside
 * the data section and consistent with the shape, no overlaps.
 */
#include "model/safetensors.h"
#include "model/json_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */
/* ---------------------------------------------------------------------- */

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
    return buf;
}

int st_looks_like_pickle(const uint8_t *head, size_t len) {
    /* torch.save since 1.6 writes a zip archive; older ones a raw pickle
     * that starts with PROTO (0x80) and a protocol number 2..5. */
    if (len >= 4 && memcmp(head, "PK\x03\x04", 4) == 0) return 1;
    if (len >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) {
        /* A safetensors header length can begin with these two bytes too;
         * a real safetensors file then has a small length and '{' at 8. */
        int st_like = len >= 9 && read_le64(head) <= ST_MAX_HEADER_BYTES && head[8] == '{';
        return !st_like;
    }
    return 0;
}

static diffuse_status map_file(const char *path, void **map, size_t *size, df_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the load */
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) return df_fail(err, DIFFUSE_ERR_NOT_FOUND, "%s: file not found", path);
        return df_fail(err, DIFFUSE_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return df_fail(err, DIFFUSE_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: empty file (0 bytes), expected a safetensors file",
                       path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: file too large to map", path);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (m == MAP_FAILED) return df_fail(err, DIFFUSE_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
    *map = m;
    *size = (size_t)st.st_size;
    return DIFFUSE_OK;
}

/* ---------------------------------------------------------------------- */
/* Header                                                                 */
/* ---------------------------------------------------------------------- */

/* Checks the length field against the file and the 100 MiB bound. */
static diffuse_status check_header_length(st_file *f, df_error *err) {
    const uint8_t *p = f->map;
    if (st_looks_like_pickle(p, f->map_size))
        return df_fail(err, DIFFUSE_ERR_MODEL_UNSAFE,
                       "%s: this is a PyTorch pickle/zip checkpoint (torch.save), not safetensors. Pickle files "
                       "can run arbitrary code when loaded, so libdiffuse refuses them; convert it to "
                       "safetensors with a trusted tool (e.g. safetensors.torch.save_file) first",
                       f->path);
    if (f->map_size < 8)
        return df_fail(err, DIFFUSE_ERR_MODEL_TRUNCATED,
                       "%s: file has %zu bytes, a safetensors file needs at least the 8-byte header length",
                       f->path, f->map_size);
    uint64_t n = read_le64(p);
    if (n == 0) return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: header length is 0", f->path);
    if (n > ST_MAX_HEADER_BYTES)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                       "%s: header length %llu is above the 100 MiB limit: not a safetensors file",
                       f->path, (unsigned long long)n);
    if (n > f->map_size - 8)
        return df_fail(err, DIFFUSE_ERR_MODEL_TRUNCATED,
                       "%s: header length %llu runs past the end of the file (%zu bytes after the length field)",
                       f->path, (unsigned long long)n, f->map_size - 8);
    f->header_size = (size_t)n;
    f->data = p + 8 + n;
    f->data_size = f->map_size - 8 - (size_t)n;
    if (p[8] != '{')
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: header does not start with '{' (byte 0x%02x)",
                       f->path, p[8]);
    return DIFFUSE_OK;
}

typedef struct key_span {
    const char *s;
    size_t n;
} key_span;

static int cmp_span(const void *a, const void *b) {
    const key_span *x = a, *y = b;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return memcmp(x->s, y->s, x->n);
}

/* Walks the (already validated) header text and records the keys of the
 * top-level object as written, because json-c keeps only the last of
 * duplicated keys. Returns the count; fills @spans when non-NULL. */
static size_t scan_top_keys(const char *h, size_t n, key_span *spans) {
    size_t count = 0;
    int depth = 0, expect_key = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < n && h[j] != '"') j += (h[j] == '\\') ? 2 : 1;
            if (depth == 1 && expect_key) {
                if (spans) spans[count] = (key_span){h + i + 1, (j < n ? j : n) - (i + 1)};
                count++;
                expect_key = 0;
            }
            i = j;
        } else if (c == '{' || c == '[') {
            depth++;
            expect_key = (depth == 1 && c == '{');
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = 1;
        }
    }
    return count;
}

/* Fails when the header text repeats a top-level key. */
static diffuse_status check_duplicates(const st_file *f, const char *h, size_t distinct, df_error *err) {
    size_t written = scan_top_keys(h, f->header_size, NULL);
    if (written == distinct) return DIFFUSE_OK;
    key_span *spans = calloc(written ? written : 1, sizeof *spans);
    if (!spans) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "%s: out of memory checking names", f->path);
    scan_top_keys(h, f->header_size, spans);
    qsort(spans, written, sizeof *spans, cmp_span);
    for (size_t i = 1; i < written; i++) {
        if (cmp_span(&spans[i - 1], &spans[i]) == 0) {
            int len = spans[i].n > 200 ? 200 : (int)spans[i].n;
            diffuse_status s = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: duplicate tensor name \"%.*s\" in header",
                                       f->path, len, spans[i].s);
            free(spans);
            return s;
        }
    }
    free(spans);
    return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                   "%s: header lists %zu names but only %zu are distinct (duplicate tensor name)", f->path,
                   written, distinct);
}

/* "__metadata__" must map strings to strings. */
static diffuse_status check_metadata(st_file *f, struct json_object *v, df_error *err) {
    if (!json_object_is_type(v, json_type_object))
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: __metadata__ must be an object, found %s", f->path,
                       dfj_type_name(v));
    json_object_object_foreach(v, k, val) {
        if (!json_object_is_type(val, json_type_string))
            return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: __metadata__ value of \"%s\" must be a string, found %s",
                           f->path, k, dfj_type_name(val));
    }
    f->metadata = json_object_get(v);
    return DIFFUSE_OK;
}

/* ---------------------------------------------------------------------- */
/* Tensor entries                                                         */
/* ---------------------------------------------------------------------- */

/* Reads a non-negative JSON integer. json-c clamps values beyond int64. */
static int get_u64(struct json_object *v, uint64_t *out) {
    if (!v || !json_object_is_type(v, json_type_int)) return -1;
    int64_t x = json_object_get_int64(v);
    if (x < 0) return -1;
    *out = (uint64_t)x;
    return 0;
}

static diffuse_status parse_dtype_shape(const st_file *f, const char *name, struct json_object *e, st_tensor *t,
                                        df_error *err) {
    struct json_object *jd = NULL, *js = NULL;
    if (!json_object_object_get_ex(e, "dtype", &jd) || !json_object_is_type(jd, json_type_string))
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: tensor \"%s\": \"dtype\" must be a string, found %s",
                       f->path, name, dfj_type_name(jd));
    if (st_dtype_parse(json_object_get_string(jd), &t->dtype) != 0)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: tensor \"%s\": unknown dtype \"%.40s\"", f->path, name,
                       json_object_get_string(jd));
    if (!json_object_object_get_ex(e, "shape", &js) || !json_object_is_type(js, json_type_array))
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: tensor \"%s\": \"shape\" must be an array, found %s",
                       f->path, name, dfj_type_name(js));
    size_t nd = json_object_array_length(js);
    if (nd > ST_MAX_DIMS)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: tensor \"%s\" has %zu dimensions, at most %d supported",
                       f->path, name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    size_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (get_u64(json_object_array_get_idx(js, i), &d) != 0)
            return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                           "%s: tensor \"%s\": shape[%zu] must be a non-negative integer", f->path, name, i);
        t->shape[i] = (int64_t)d;
        if ((uint64_t)(size_t)d != d || df_mul_size(numel, (size_t)d, &numel)) overflow = 1;
    }
    char sh[256];
    if (overflow || df_mul_size(numel, st_dtype_size(t->dtype), &t->nbytes))
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: tensor \"%s\": shape %s x %zu bytes overflows", f->path,
                       name, st_shape_str(t->shape, t->ndim, sh, sizeof sh), st_dtype_size(t->dtype));
    t->numel = numel;
    return DIFFUSE_OK;
}

static diffuse_status parse_offsets(const st_file *f, const char *name, struct json_object *e, st_tensor *t,
                                    df_error *err) {
    struct json_object *jo = NULL;
    uint64_t b, en;
    if (!json_object_object_get_ex(e, "data_offsets", &jo) || !json_object_is_type(jo, json_type_array) ||
        json_object_array_length(jo) != 2 || get_u64(json_object_array_get_idx(jo, 0), &b) != 0 ||
        get_u64(json_object_array_get_idx(jo, 1), &en) != 0)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                       "%s: tensor \"%s\": \"data_offsets\" must be [begin, end] with non-negative integers",
                       f->path, name);
    if (b > en)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] has begin > end",
                       f->path, name, (unsigned long long)b, (unsigned long long)en);
    char sh[256];
    if (en - b != (uint64_t)t->nbytes)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                       "%s: tensor \"%s\": data_offsets span %llu bytes but %s shape %s needs %zu", f->path, name,
                       (unsigned long long)(en - b), st_dtype_name(t->dtype),
                       st_shape_str(t->shape, t->ndim, sh, sizeof sh), t->nbytes);
    if (en > (uint64_t)f->data_size)
        return df_fail(err, DIFFUSE_ERR_MODEL_TRUNCATED,
                       "%s: tensor \"%s\" ends at data byte %llu but the data section has only %zu bytes", f->path,
                       name, (unsigned long long)en, f->data_size);
    t->offset = (size_t)b;
    t->data = f->data + b;
    return DIFFUSE_OK;
}

static diffuse_status parse_entry(const st_file *f, const char *name, struct json_object *e, st_tensor *t,
                                  df_error *err) {
    if (name[0] == '\0') return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: empty tensor name", f->path);
    if (!json_object_is_type(e, json_type_object))
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: entry \"%s\" must be an object, found %s", f->path, name,
                       dfj_type_name(e));
    diffuse_status s = parse_dtype_shape(f, name, e, t, err);
    if (s == DIFFUSE_OK) s = parse_offsets(f, name, e, t, err);
    return s;
}

static int cmp_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Sorts by offset, rejects overlaps, then sorts by name for st_find. */
static diffuse_status check_overlaps(st_file *f, df_error *err) {
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_offset);
    const st_tensor *prev = NULL; /* the non-empty tensor that ends last so far */
    for (size_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *b = &f->tensors[i];
        if (b->nbytes == 0) continue;
        if (prev && b->offset < prev->offset + prev->nbytes)
            return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                           "%s: tensors \"%s\" [%zu, %zu) and \"%s\" [%zu, %zu) overlap", f->path, prev->name,
                           prev->offset, prev->offset + prev->nbytes, b->name, b->offset, b->offset + b->nbytes);
        prev = b;
    }
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_name);
    return DIFFUSE_OK;
}

/* Allocates the tensor table and name pool, then parses each entry. */
static diffuse_status parse_entries(st_file *f, struct json_object *root, df_error *err) {
    size_t count = 0, pool = 0;
    json_object_object_foreach(root, k0, v0) {
        (void)v0;
        if (strcmp(k0, "__metadata__") == 0) continue;
        count++;
        pool += strlen(k0) + 1;
    }
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    f->names = malloc(pool ? pool : 1);
    if (!f->tensors || !f->names)
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu tensor entries", f->path, count);
    char *np = f->names;
    json_object_object_foreach(root, k, v) {
        if (strcmp(k, "__metadata__") == 0) {
            diffuse_status s = check_metadata(f, v, err);
            if (s != DIFFUSE_OK) return s;
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        size_t len = strlen(k) + 1;
        memcpy(np, k, len);
        t->name = np;
        np += len;
        diffuse_status s = parse_entry(f, t->name, v, t, err);
        if (s != DIFFUSE_OK) return s;
        f->n_tensors++;
    }
    return check_overlaps(f, err);
}

static diffuse_status parse_header(st_file *f, df_error *err) {
    const char *h = (const char *)f->map + 8;
    char why[256];
    struct json_object *root = dfj_parse(h, f->header_size, 1, why, sizeof why);
    if (!root) return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: invalid JSON header: %s", f->path, why);
    diffuse_status s = DIFFUSE_OK;
    if (!json_object_is_type(root, json_type_object))
        s = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: header must be a JSON object, found %s", f->path,
                    dfj_type_name(root));
    if (s == DIFFUSE_OK) s = check_duplicates(f, h, (size_t)json_object_object_length(root), err);
    if (s == DIFFUSE_OK) s = parse_entries(f, root, err);
    json_object_put(root);
    return s;
}

/* ---------------------------------------------------------------------- */
/* Public functions                                                       */
/* ---------------------------------------------------------------------- */

diffuse_status st_open(const char *path, st_file **out, df_error *err) {
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    df_strlcpy(f->path, path, sizeof f->path);
    diffuse_status s = map_file(path, &f->map, &f->map_size, err);
    if (s == DIFFUSE_OK) s = check_header_length(f, err);
    if (s == DIFFUSE_OK) s = parse_header(f, err);
    if (s != DIFFUSE_OK) {
        st_close(f);
        return s;
    }
    *out = f;
    return DIFFUSE_OK;
}

static int f32_in_place(const st_tensor *t) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return t->dtype == ST_F32 && ((uintptr_t)t->data % _Alignof(float)) == 0;
#else
    (void)t;
    return 0;
#endif
}

diffuse_status st_expose_f32(st_file *f, df_error *err) {
    size_t total = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (st_dtype_is_weight(t->dtype) && !f32_in_place(t) && df_add_size(total, t->numel, &total))
            return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "%s: float32 copy of the weights overflows", f->path);
    }
    size_t bytes;
    if (total && (df_mul_size(total, sizeof(float), &bytes) || !(f->f32_slab = malloc(bytes))))
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu floats for converted weights",
                       f->path, total);
    f->f32_slab_floats = total;
    size_t at = 0;
    for (size_t i = 0; i < f->n_tensors; i++) { /* assign slots, then convert in parallel */
        st_tensor *t = &f->tensors[i];
        if (!st_dtype_is_weight(t->dtype)) continue;
        if (f32_in_place(t)) {
            t->f32 = t->data;
        } else {
            t->f32 = f->f32_slab + at;
            at += t->numel;
        }
    }
    const long n = (long)f->n_tensors;
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < n; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->f32 && (const void *)t->f32 != t->data)
            df_convert_to_f32(t->dtype, t->data, f->f32_slab + (t->f32 - f->f32_slab), t->numel);
    }
    /* The converted tensors' file pages are not read again: drop them from
     * memory (a private read-only mapping: pages touched later, e.g. the
     * float32 tensors used in place, are read back from the file). For an
     * fp16 checkpoint this keeps the file's size out of the resident set. */
    if (total) madvise(f->map, f->map_size, MADV_DONTNEED);
    return DIFFUSE_OK;
}

void st_memory(const st_file *f, size_t *host_bytes, size_t dtype_bytes[ST_DTYPE_COUNT]) {
    *host_bytes += f->f32_slab_floats * sizeof(float);
    for (size_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!st_dtype_is_weight(t->dtype)) continue;
        dtype_bytes[t->dtype] += t->nbytes;
        if ((const void *)t->f32 == t->data) *host_bytes += t->nbytes;
    }
}

const st_tensor *st_find(const st_file *f, const char *name) {
    if (!f || !name || f->n_tensors == 0) return NULL;
    st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof *f->tensors, cmp_name);
}

void st_close(st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    json_object_put(f->metadata);
    free(f->tensors);
    free(f->names);
    free(f->f32_slab);
    free(f);
}
