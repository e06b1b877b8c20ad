/*
 * test_model_load.c - checkpoint loading: the tiny fixture models load with
 * the right tensors and values (F32 in place, F16/BF16 converted exactly),
 * and every malformed file or folder, written here into a temporary folder
 * from a valid base, fails with its specific status and a message that says
 * what is wrong. A bounded mutation loop checks that random corruption gives
 * a status, never a crash (run it under ASan+UBSan too).
 */
#include "model/dtype.h"
#include "model/model.h"
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int n_pass, n_fail;
static char g_tmp[256];      /* the temporary folder of this run */
static char g_fixture[1024]; /* tests/fixtures/models/tiny-sd1 */
static char g_single[1024];  /* tests/fixtures/models/tiny-sd1-single.safetensors */

static void report(int ok, const char *name, const char *fmt, ...) {
    char detail[2048] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    printf("%s  %-44s %s\n", ok ? "ok  " : "FAIL", name, detail);
    if (ok) n_pass++;
    else n_fail++;
}

/* ---------------------------------------------------------------------- */
/* Files                                                                  */
/* ---------------------------------------------------------------------- */

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

/* Writes a string literal's bytes (embedded NULs included). */
#define write_lit(path, lit) write_all((path), (lit), sizeof(lit) - 1)

static void write_text(const char *path, const char *text) {
    write_all(path, text, strlen(text));
}

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes a safetensors file: length, @header padded with @pad spaces, data. */
static void write_st(const char *path, const char *header, size_t pad, const void *data, size_t data_len) {
    size_t hl = strlen(header) + pad;
    unsigned char *buf = malloc(8 + hl + data_len);
    put_le64(buf, hl);
    memcpy(buf + 8, header, strlen(header));
    memset(buf + 8 + strlen(header), ' ', pad);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    write_all(path, buf, 8 + hl + data_len);
    free(buf);
}

static int copy_file(const char *src, const char *dst) {
    size_t n;
    unsigned char *b = read_all(src, &n);
    if (!b) return -1;
    write_all(dst, b, n);
    free(b);
    return 0;
}

/* Copies the fixture folder into g_tmp/@name (two levels: files and the
 * component folders' files) and returns the new path in @out. */
static void copy_fixture(const char *name, char *out, size_t cap) {
    static const char *const files[] = {
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
        "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
        "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
        "tokenizer/merges.txt"};
    static const char *const dirs[] = {"unet", "vae", "text_encoder", "scheduler", "tokenizer"};
    snprintf(out, cap, "%s/%s", g_tmp, name);
    mkdir(out, 0755);
    char a[2048], b[2048];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(b, sizeof b, "%s/%s", out, dirs[i]);
        mkdir(b, 0755);
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(a, sizeof a, "%s/%s", g_fixture, files[i]);
        snprintf(b, sizeof b, "%s/%s", out, files[i]);
        if (copy_file(a, b) != 0) {
            fprintf(stderr, "cannot copy %s (run scripts/make_tiny_models.py?)\n", a);
            exit(2);
        }
    }
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* ---------------------------------------------------------------------- */
/* Rewriting the JSON header of a safetensors file                        */
/* ---------------------------------------------------------------------- */

/* Returns the header to write: @root changed in place, or a new object
 * (then it releases @root). */
typedef struct json_object *(*header_edit)(struct json_object *root, const void *arg);

/* Rewrites @path with its header passed through @edit; the data section is
 * kept byte for byte (removed tensors leave a gap, which is valid). */
static void edit_st_header(const char *path, header_edit edit, const void *arg) {
    size_t n;
    unsigned char *b = read_all(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    char *text = malloc(hl + 1);
    memcpy(text, b + 8, hl);
    text[hl] = '\0';
    struct json_object *root = json_tokener_parse(text);
    root = edit(root, arg);
    const char *out = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    size_t ol = strlen(out), pad = (8 - ol % 8) % 8;
    write_st(path, out, pad, b + 8 + hl, n - 8 - hl);
    json_object_put(root);
    free(text);
    free(b);
}

static struct json_object *edit_delete_key(struct json_object *root, const void *arg) {
    json_object_object_del(root, (const char *)arg);
    return root;
}

/* Swaps the first two dims of tensor @arg (same element count). */
static struct json_object *edit_swap_shape(struct json_object *root, const void *arg) {
    struct json_object *t, *shape;
    json_object_object_get_ex(root, (const char *)arg, &t);
    json_object_object_get_ex(t, "shape", &shape);
    int64_t d0 = json_object_get_int64(json_object_array_get_idx(shape, 0));
    int64_t d1 = json_object_get_int64(json_object_array_get_idx(shape, 1));
    json_object_array_put_idx(shape, 0, json_object_new_int64(d1));
    json_object_array_put_idx(shape, 1, json_object_new_int64(d0));
    return root;
}

/* Declares tensor @arg as I32 (same element size as F32, so still valid). */
static struct json_object *edit_set_dtype_i32(struct json_object *root, const void *arg) {
    struct json_object *t;
    json_object_object_get_ex(root, (const char *)arg, &t);
    json_object_object_add(t, "dtype", json_object_new_string("I32"));
    return root;
}

/* Puts "text_model." in front of every tensor key (transformers 4 style). */
static struct json_object *edit_add_text_model_prefix(struct json_object *root, const void *arg) {
    (void)arg;
    struct json_object *out = json_object_new_object();
    json_object_object_foreach(root, k, v) {
        char name[512];
        snprintf(name, sizeof name, "%s%s", strcmp(k, "__metadata__") ? "text_model." : "", k);
        json_object_object_add(out, name, json_object_get(v));
    }
    json_object_put(root);
    return out;
}

/* Loads or rewrites a JSON config: sets @key to @value (a JSON text) or
 * deletes it when @value is NULL. */
static void edit_json_file(const char *path, const char *key, const char *value) {
    struct json_object *root = json_object_from_file(path);
    if (!root) {
        fprintf(stderr, "cannot parse %s\n", path);
        exit(2);
    }
    if (value) json_object_object_add(root, key, json_tokener_parse(value));
    else json_object_object_del(root, key);
    json_object_to_file_ext(path, root, JSON_C_TO_STRING_PRETTY);
    json_object_put(root);
}

/* ---------------------------------------------------------------------- */
/* Loading with expectations                                              */
/* ---------------------------------------------------------------------- */

/* Loads @path and checks the status and (on failure) that the message
 * contains @substr. Returns the model when @keep and the load succeeded. */
static diffuse_model *expect_load(const char *name, const char *path, diffuse_status want, const char *substr,
                                  int keep) {
    diffuse_model *m = (diffuse_model *)(uintptr_t)1;
    df_error err;
    df_error_clear(&err);
    diffuse_status s = df_model_load(path, NULL, &m, &err);
    int ok = s == want;
    if (s != DIFFUSE_OK) ok = ok && m == NULL && err.status == s && err.msg[0] != '\0';
    if (s != DIFFUSE_OK && substr) ok = ok && strstr(err.msg, substr) != NULL;
    report(ok, name, "%s%s%s", diffuse_status_string(s), s != DIFFUSE_OK ? ": " : "", s != DIFFUSE_OK ? err.msg : "");
    if (!ok && s != want) printf("      expected %s\n", diffuse_status_string(want));
    if (!ok && substr) printf("      expected message containing \"%s\"\n", substr);
    if (s == DIFFUSE_OK && keep) return m;
    if (s == DIFFUSE_OK) df_model_free(m);
    return NULL;
}

static const st_tensor *tensor_or_fail(const diffuse_model *m, df_component c, const char *name) {
    const st_tensor *t = df_model_tensor(m, c, name);
    if (!t || !t->f32) {
        report(0, "tensor lookup", "%s/%s missing or without float32 view", df_component_name(c), name);
        return NULL;
    }
    return t;
}

/* Compares two float32 views element by element: |a-b| <= rel*|b| + abs_tol. */
static int same_values(const st_tensor *a, const st_tensor *b, double rel, double abs_tol, double *worst) {
    *worst = 0;
    if (!a || !b || a->numel != b->numel) return 0;
    for (size_t i = 0; i < a->numel; i++) {
        double d = fabs((double)a->f32[i] - (double)b->f32[i]);
        if (d > *worst) *worst = d;
        if (!(d <= rel * fabs((double)b->f32[i]) + abs_tol)) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------- */
/* dtype conversions                                                      */
/* ---------------------------------------------------------------------- */

static void test_dtype(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint32_t e = (h >> 10) & 0x1f, man = h & 0x3ff;
        double ref = e == 0 ? ldexp((double)man, -24) : ldexp((double)(1024 + man), (int)e - 25);
        if (h & 0x8000) ref = -ref;
        float got = df_f16_to_f32((uint16_t)h);
        if (e == 0x1f) bad += man ? !isnan(got) : !(isinf(got) && (got < 0) == !!(h & 0x8000));
        else bad += (double)got != ref;
    }
    report(bad == 0, "f16->f32 all 65536 values", "%d mismatches", bad);
    int bok = df_bf16_to_f32(0x3f80) == 1.0f && df_bf16_to_f32(0xc040) == -3.0f && isinf(df_bf16_to_f32(0x7f80)) &&
              isnan(df_bf16_to_f32(0x7fc0)) && df_bf16_to_f32(0x0001) > 0.0f;
    report(bok, "bf16->f32 known values", NULL);
}

/* ---------------------------------------------------------------------- */
/* Hand-written single-file checkpoints                                   */
/* ---------------------------------------------------------------------- */

/* A minimal valid single-file checkpoint: one tensor per component and each
 * weight dtype. Data: F32 1..6 | BF16 1.5, -3 | F16 1, -2, 2^-24, inf |
 * F32 0.5, -0.25, 1e-3, 7. */
static const char *const BASE_HEADER =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"model.diffusion_model.conv_in.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"model.diffusion_model.conv_in.bias\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[24,28]},"
    "\"first_stage_model.quant_conv.weight\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[28,36]},"
    "\"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight\":"
    "{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[36,52]}}";
static unsigned char base_data[52];

static void init_base_data(void) {
    const float a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {0.5f, -0.25f, 1e-3f, 7.0f};
    const uint16_t bf[2] = {0x3fc0, 0xc040}, hf[4] = {0x3c00, 0xc000, 0x0001, 0x7c00};
    memcpy(base_data, a, 24); /* little-endian host assumed by the fixtures */
    memcpy(base_data + 24, bf, 4);
    memcpy(base_data + 28, hf, 8);
    memcpy(base_data + 36, b, 16);
}

/* Pads the header so the data section starts at 8 + N with N % 8 == @mod8. */
static void write_base_variant(const char *path, const char *header, size_t mod8) {
    size_t hl = strlen(header), pad = (8 + mod8 - hl % 8) % 8;
    write_st(path, header, pad, base_data, sizeof base_data);
}

/* @base with the first occurrence of @from replaced by @to (static buffer). */
static const char *replace_once(const char *base, const char *from, const char *to) {
    static char out[4096];
    const char *p = strstr(base, from);
    if (!p) {
        fprintf(stderr, "test bug: \"%s\" not in header\n", from);
        exit(2);
    }
    snprintf(out, sizeof out, "%.*s%s%s", (int)(p - base), base, to, p + strlen(from));
    return out;
}

static void tmp_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", g_tmp, name);
}

static void check_base_values(const diffuse_model *m, const char *name) {
    const st_tensor *w = tensor_or_fail(m, DF_COMP_UNET, "conv_in.weight");
    const st_tensor *b = tensor_or_fail(m, DF_COMP_UNET, "conv_in.bias");
    const st_tensor *q = tensor_or_fail(m, DF_COMP_VAE, "quant_conv.weight");
    const st_tensor *e = tensor_or_fail(m, DF_COMP_TEXT_ENCODER, "embeddings.token_embedding.weight");
    if (!w || !b || !q || !e) return;
    int ok = m->single_file && m->family == DIFFUSE_FAMILY_SD1 && w->dtype == ST_F32 && w->f32[5] == 6.0f &&
             b->dtype == ST_BF16 && b->f32[0] == 1.5f && b->f32[1] == -3.0f && q->dtype == ST_F16 &&
             q->f32[0] == 1.0f && q->f32[1] == -2.0f && q->f32[2] == ldexpf(1.0f, -24) && isinf(q->f32[3]) &&
             e->f32[2] == 1e-3f && e->f32[3] == 7.0f && m->comp[DF_COMP_UNET].config == NULL;
    report(ok, name, "F32 %s, BF16 and F16 converted", w->f32 == w->data ? "in place" : "copied");
}

static void test_base_valid(void) {
    char p[512];
    tmp_path(p, sizeof p, "base.safetensors");
    write_base_variant(p, BASE_HEADER, 0);
    diffuse_model *m = expect_load("hand-written single file loads", p, DIFFUSE_OK, NULL, 1);
    if (m) {
        check_base_values(m, "  values (aligned data)");
        const st_tensor *w = df_model_tensor(m, DF_COMP_UNET, "conv_in.weight");
        report(w && w->f32 == w->data, "  aligned F32 used in place (no copy)", NULL);
        df_model_free(m);
    }
    tmp_path(p, sizeof p, "misaligned.safetensors");
    write_base_variant(p, BASE_HEADER, 2); /* data section starts at 2 mod 4 */
    m = expect_load("misaligned F32 data loads", p, DIFFUSE_OK, NULL, 1);
    if (m) {
        check_base_values(m, "  values (misaligned data)");
        const st_tensor *w = df_model_tensor(m, DF_COMP_UNET, "conv_in.weight");
        report(w && w->f32 != w->data, "  misaligned F32 converted into the slab", NULL);
        df_model_free(m);
    }
}

/* One malformed header: a substitution into BASE_HEADER (or a whole header
 * when @from is NULL), the status and message part it must produce. */
typedef struct header_case {
    const char *name;
    const char *from, *to;
    diffuse_status want;
    const char *substr;
} header_case;

static void test_bad_headers(void) {
    static const header_case cases[] = {
        {"unknown dtype", "\"F16\"", "\"F17\"", DIFFUSE_ERR_MODEL_FORMAT, "unknown dtype \"F17\""},
        {"shape/size mismatch", "[2,3]", "[2,4]", DIFFUSE_ERR_MODEL_FORMAT, "shape [2, 4] needs 32"},
        {"overlapping offsets", "[24,28]", "[20,24]", DIFFUSE_ERR_MODEL_FORMAT, "overlap"},
        {"begin > end", "\"shape\":[2],\"data_offsets\":[24,28]", "\"shape\":[2],\"data_offsets\":[28,24]",
         DIFFUSE_ERR_MODEL_FORMAT, "begin > end"},
        {"tensor past the data section", "\"shape\":[4],\"data_offsets\":[36,52]",
         "\"shape\":[8],\"data_offsets\":[36,68]", DIFFUSE_ERR_MODEL_TRUNCATED, "data section has only 52"},
        {"dims product overflows", "\"shape\":[4]", "\"shape\":[4294967296,4294967296,4]",
         DIFFUSE_ERR_MODEL_FORMAT, "overflows"},
        {"dim x dtype size overflows", "\"shape\":[4]", "\"shape\":[4611686018427387904]",
         DIFFUSE_ERR_MODEL_FORMAT, "overflows"},
        {"negative dim", "[2,3]", "[2,-3]", DIFFUSE_ERR_MODEL_FORMAT, "shape[1] must be a non-negative integer"},
        {"fractional dim", "[2,3]", "[2,3.0]", DIFFUSE_ERR_MODEL_FORMAT, "non-negative integer"},
        {"too many dims", "[2,3]", "[1,1,1,1,1,1,1,1,2,3]", DIFFUSE_ERR_UNSUPPORTED, "10 dimensions"},
        {"duplicate tensor name", "\"first_stage_model.quant_conv.weight\"", "\"model.diffusion_model.conv_in.bias\"",
         DIFFUSE_ERR_MODEL_FORMAT, "duplicate tensor name \"model.diffusion_model.conv_in.bias\""},
        {"invalid JSON header", "[2,3]", "[2,3", DIFFUSE_ERR_MODEL_FORMAT, "invalid JSON header"},
        {"data_offsets not a pair", "[0,24]", "[0]", DIFFUSE_ERR_MODEL_FORMAT, "data_offsets"},
        {"dtype not a string", "\"F32\"", "32", DIFFUSE_ERR_MODEL_FORMAT, "\"dtype\" must be a string"},
        {"metadata value not a string", "{\"format\":\"pt\"}", "{\"format\":1}", DIFFUSE_ERR_MODEL_FORMAT,
         "__metadata__"},
        {"entry not an object", "{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[36,52]}", "[36,52]",
         DIFFUSE_ERR_MODEL_FORMAT, "must be an object"},
        {"header is an array", NULL, "[1,2]", DIFFUSE_ERR_MODEL_FORMAT, "does not start with '{'"},
        {"trailing data after JSON", NULL, "{}x", DIFFUSE_ERR_MODEL_FORMAT, "invalid JSON header"},
        {"not an SD checkpoint", NULL, "{\"foo\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         DIFFUSE_ERR_MODEL_FORMAT, "not a Stable Diffusion checkpoint"},
        {"single file without VAE", "first_stage_model.", "second_stage_model.",
         DIFFUSE_ERR_MODEL_MISSING_TENSOR, "no first_stage_model.*"},
    };
    char p[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const header_case *c = &cases[i];
        snprintf(p, sizeof p, "%s/hdr%02zu.safetensors", g_tmp, i);
        write_base_variant(p, c->from ? replace_once(BASE_HEADER, c->from, c->to) : c->to, 0);
        expect_load(c->name, p, c->want, c->substr, 0);
    }
}

/* Files whose bytes, not their header text, are wrong. */
static void test_bad_bytes(void) {
    char p[512];
    unsigned char buf[256];
    tmp_path(p, sizeof p, "empty.safetensors");
    write_all(p, "", 0);
    expect_load("empty file", p, DIFFUSE_ERR_MODEL_FORMAT, "empty file", 0);
    tmp_path(p, sizeof p, "short.safetensors");
    write_all(p, "\x10\0\0", 3);
    expect_load("file shorter than the length field", p, DIFFUSE_ERR_MODEL_TRUNCATED, "at least the 8-byte", 0);
    tmp_path(p, sizeof p, "hlen0.safetensors");
    memset(buf, 0, 8);
    memcpy(buf + 8, "{}", 2);
    write_all(p, buf, 10);
    expect_load("header length 0", p, DIFFUSE_ERR_MODEL_FORMAT, "header length is 0", 0);
    tmp_path(p, sizeof p, "hlenhuge.safetensors");
    put_le64(buf, (uint64_t)1 << 40);
    write_all(p, buf, 10);
    expect_load("header length absurd (1 TiB)", p, DIFFUSE_ERR_MODEL_FORMAT, "above the 100 MiB limit", 0);
    tmp_path(p, sizeof p, "hlenpast.safetensors");
    put_le64(buf, 1000);
    write_all(p, buf, 10);
    expect_load("header length past EOF", p, DIFFUSE_ERR_MODEL_TRUNCATED, "runs past the end of the file", 0);

    /* A valid file cut inside its data section. */
    char base[512];
    tmp_path(base, sizeof base, "base.safetensors");
    size_t n;
    unsigned char *b = read_all(base, &n);
    tmp_path(p, sizeof p, "truncated.safetensors");
    write_all(p, b, n - 10);
    expect_load("truncated file", p, DIFFUSE_ERR_MODEL_TRUNCATED, "ends at data byte 52", 0);
    b[8 + 20] = '\0'; /* a NUL byte inside the JSON header */
    tmp_path(p, sizeof p, "nul.safetensors");
    write_all(p, b, n);
    expect_load("NUL byte in header", p, DIFFUSE_ERR_MODEL_FORMAT, "NUL byte", 0);
    free(b);
}

/* Pickle checkpoints are refused by name and by content. */
static void test_pickles(void) {
    char p[512], base[512];
    tmp_path(base, sizeof base, "base.safetensors");
    tmp_path(p, sizeof p, "model.ckpt");
    copy_file(base, p); /* even valid safetensors bytes: the name says pickle */
    expect_load(".ckpt refused", p, DIFFUSE_ERR_MODEL_UNSAFE, "arbitrary code", 0);
    tmp_path(p, sizeof p, "model.PTH");
    copy_file(base, p);
    expect_load(".PTH refused (any case)", p, DIFFUSE_ERR_MODEL_UNSAFE, "safetensors", 0);
    tmp_path(p, sizeof p, "zip.safetensors");
    write_lit(p, "PK\x03\x04\x14\x00\x00\x00\x08\x00" "archive/data.pkl");
    expect_load("zip bytes named .safetensors", p, DIFFUSE_ERR_MODEL_UNSAFE, "arbitrary code", 0);
    tmp_path(p, sizeof p, "pickle.safetensors");
    write_lit(p, "\x80\x02}q\x00(X\x05\x00\x00\x00state_dictq\x01}q\x02u.");
    expect_load("pickle bytes named .safetensors", p, DIFFUSE_ERR_MODEL_UNSAFE, "pickle", 0);
}

/* Paths that are not models at all. */
static void test_paths(void) {
    char p[1200];
    tmp_path(p, sizeof p, "does-not-exist");
    expect_load("nonexistent path", p, DIFFUSE_ERR_NOT_FOUND, "no such file or folder", 0);
    tmp_path(p, sizeof p, "emptydir");
    mkdir(p, 0755);
    expect_load("folder without model_index.json", p, DIFFUSE_ERR_NOT_FOUND, "has no model_index.json", 0);
    snprintf(p, sizeof p, "%s/unet", g_fixture);
    expect_load("component folder passed", p, DIFFUSE_ERR_NOT_FOUND, "one component's folder", 0);
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", g_fixture);
    expect_load("component weights file passed", p, DIFFUSE_ERR_MODEL_FORMAT, "model_index.json", 0);
}

/* ---------------------------------------------------------------------- */
/* The tiny diffusers fixture                                             */
/* ---------------------------------------------------------------------- */

static void test_fixture_folder(void) {
    diffuse_model *m = expect_load("tiny-sd1 folder loads", g_fixture, DIFFUSE_OK, NULL, 1);
    if (!m) return;
    const df_model_dims *d = &m->dims;
    int dims_ok = d->unet_in_channels == 4 && d->unet_out_channels == 4 && d->unet_sample_size == 32 &&
                  d->cross_attention_dim == 32 && d->latent_channels == 4 && d->vae_scale_factor == 2 &&
                  d->text_hidden_size == 32 && d->text_layers == 5 && d->text_vocab_size == 1000 &&
                  d->text_max_positions == 77 && !d->v_prediction;
    report(dims_ok && m->family == DIFFUSE_FAMILY_SD1 && !m->single_file, "  dims and family from configs",
           "family %d (quick_gelu text encoder -> SD1)", (int)m->family);
    /* Parameter counts of the diffusers/transformers modules themselves. */
    report(m->comp[DF_COMP_UNET].n_params == 1106212 && m->comp[DF_COMP_VAE].n_params == 658375 &&
               m->comp[DF_COMP_TEXT_ENCODER].n_params == 68473,
           "  parameter counts match torch", "%llu %llu %llu", (unsigned long long)m->comp[0].n_params,
           (unsigned long long)m->comp[1].n_params, (unsigned long long)m->comp[2].n_params);
    const st_tensor *te = tensor_or_fail(m, DF_COMP_TEXT_ENCODER, "embeddings.token_embedding.weight");
    const st_tensor *un = tensor_or_fail(m, DF_COMP_UNET, "conv_in.weight");
    const st_tensor *va = tensor_or_fail(m, DF_COMP_VAE, "quant_conv.weight");
    report(te && te->dtype == ST_F32 && te->f32 == te->data && strstr(m->comp[2].weights->path, "fp16") == NULL,
           "  plain text encoder preferred, F32 in place", NULL);
    report(un && un->dtype == ST_F16 && va && va->dtype == ST_BF16 && un->f32 != un->data,
           "  unet F16 and vae BF16 converted", NULL);
    report(m->scheduler_config && m->tokenizer_config && strstr(m->tokenizer_dir, "tokenizer"),
           "  scheduler and tokenizer recorded", "%s", m->tokenizer_dir);
    df_model_free(m);
}

/* The single-file fixture holds the same weights as float32 under original
 * prefixes: conversions of the folder's F16/BF16 must match exactly. */
static void test_fixture_single_vs_folder(void) {
    diffuse_model *s = expect_load("tiny-sd1 single file loads", g_single, DIFFUSE_OK, NULL, 1);
    diffuse_model *f = expect_load("  (folder again for comparison)", g_fixture, DIFFUSE_OK, NULL, 1);
    if (s && f) {
        static const struct { df_component c; const char *name; } pairs[] = {
            {DF_COMP_TEXT_ENCODER, "embeddings.token_embedding.weight"},
            {DF_COMP_TEXT_ENCODER, "encoder.layers.4.self_attn.q_proj.weight"},
            {DF_COMP_UNET, "conv_in.weight"},
            {DF_COMP_UNET, "time_embedding.linear_1.weight"},
            {DF_COMP_VAE, "quant_conv.weight"},
            {DF_COMP_VAE, "decoder.conv_out.weight"},
        };
        report(s->single_file && s->family == DIFFUSE_FAMILY_SD1 && s->comp[0].config == NULL,
               "  single file: SD1 (cond_stage_model.transformer)", "text prefix %s", s->comp[2].key_prefix);
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
            const st_tensor *a = tensor_or_fail(s, pairs[i].c, pairs[i].name);
            const st_tensor *b = tensor_or_fail(f, pairs[i].c, pairs[i].name);
            double worst;
            int ok = a && b && a->dtype == ST_F32 && same_values(a, b, 0, 0, &worst);
            report(ok, "  exact match", "%s %s (folder %s)", df_component_name(pairs[i].c), pairs[i].name,
                   b ? st_dtype_name(b->dtype) : "?");
        }
    }
    df_model_free(s);
    df_model_free(f);
}

/* Only the fp16 variant present: it loads, within half precision of F32. */
static void test_fp16_variant(void) {
    char dir[1024], p[1200];
    copy_fixture("fp16only", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", dir);
    remove(p);
    diffuse_model *v = expect_load("fp16 variant alone loads", dir, DIFFUSE_OK, NULL, 1);
    diffuse_model *f = expect_load("  (fixture for comparison)", g_fixture, DIFFUSE_OK, NULL, 1);
    if (v && f) {
        const char *names[] = {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
                               "final_layer_norm.weight", "encoder.layers.0.mlp.fc1.weight"};
        for (size_t i = 0; i < 4; i++) {
            const st_tensor *a = tensor_or_fail(v, DF_COMP_TEXT_ENCODER, names[i]);
            const st_tensor *b = tensor_or_fail(f, DF_COMP_TEXT_ENCODER, names[i]);
            double worst;
            /* round-to-nearest half: relative 2^-11, absolute 2^-25 for subnormals */
            int ok = a && a->dtype == ST_F16 && same_values(a, b, ldexp(1, -11), ldexp(1, -25), &worst);
            report(ok, "  f16 vs f32 values", "%s max|diff| %.3g", names[i], worst);
        }
    }
    df_model_free(v);
    df_model_free(f);
}

/* Each case copies the fixture and breaks one thing: here the tensors. */
static void test_bad_tensors(void) {
    char d[1024], p[1200];
    copy_fixture("missing_tensor", d, sizeof d);
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", d);
    edit_st_header(p, edit_delete_key, "conv_in.weight");
    expect_load("missing required tensor", d, DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                "missing tensor \"conv_in.weight\" (config.json implies shape [32, 4, 3, 3])", 0);

    copy_fixture("wrong_shape", d, sizeof d);
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", d);
    edit_st_header(p, edit_swap_shape, "conv_out.weight");
    expect_load("wrong shape for a required tensor", d, DIFFUSE_ERR_MODEL_SHAPE,
                "\"conv_out.weight\" has shape [32, 4, 3, 3], config.json implies [4, 32, 3, 3]", 0);

    copy_fixture("te_layer_missing", d, sizeof d);
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", d);
    edit_st_header(p, edit_delete_key, "encoder.layers.3.self_attn.q_proj.weight");
    expect_load("text encoder layer 3 q_proj missing", d, DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                "encoder.layers.3.self_attn.q_proj.weight", 0);

}

/* Config files that are broken or disagree with each other. */
static void test_bad_configs(void) {
    char d[1024], p[1200];
    copy_fixture("bad_json", d, sizeof d);
    snprintf(p, sizeof p, "%s/unet/config.json", d);
    write_text(p, "{\"in_channels\": 4,,}");
    expect_load("invalid config.json", d, DIFFUSE_ERR_MODEL_CONFIG, "unet/config.json: invalid JSON", 0);

    copy_fixture("missing_key", d, sizeof d);
    snprintf(p, sizeof p, "%s/vae/config.json", d);
    edit_json_file(p, "latent_channels", NULL);
    expect_load("config key missing", d, DIFFUSE_ERR_MODEL_CONFIG,
                "vae/config.json: required key \"latent_channels\" is missing", 0);

    copy_fixture("wrong_type", d, sizeof d);
    snprintf(p, sizeof p, "%s/text_encoder/config.json", d);
    edit_json_file(p, "hidden_size", "\"thirty-two\"");
    expect_load("config key of the wrong type", d, DIFFUSE_ERR_MODEL_CONFIG,
                "key \"hidden_size\" must be an integer, found string", 0);

    copy_fixture("cross_dim", d, sizeof d);
    snprintf(p, sizeof p, "%s/unet/config.json", d);
    edit_json_file(p, "cross_attention_dim", "64");
    expect_load("unet/text width mismatch", d, DIFFUSE_ERR_MODEL_CONFIG, "cross_attention_dim 64 does not match", 0);

    copy_fixture("no_vae_entry", d, sizeof d);
    snprintf(p, sizeof p, "%s/model_index.json", d);
    edit_json_file(p, "vae", NULL);
    expect_load("model_index.json without vae", d, DIFFUSE_ERR_MODEL_CONFIG, "component \"vae\" is missing", 0);

    copy_fixture("sdxl_index", d, sizeof d);
    snprintf(p, sizeof p, "%s/model_index.json", d);
    edit_json_file(p, "text_encoder_2", "[\"transformers\", \"CLIPTextModelWithProjection\"]");
    expect_load("SDXL-style model_index.json", d, DIFFUSE_ERR_UNSUPPORTED, "second text encoder", 0);
}

/* Weights files that are missing, sharded, pickled or unusable. */
static void test_bad_weights(void) {
    char d[1024], p[1200], q[1200];

    copy_fixture("int_weights", d, sizeof d);
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", d);
    edit_st_header(p, edit_set_dtype_i32, "final_layer_norm.weight");
    expect_load("required tensor with integer dtype", d, DIFFUSE_ERR_UNSUPPORTED, "dtype I32; weights must be", 0);

    copy_fixture("sharded", d, sizeof d);
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", d);
    remove(p);
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors.index.json", d);
    write_text(p, "{\"metadata\": {}, \"weight_map\": {}}");
    expect_load("sharded weights", d, DIFFUSE_ERR_UNSUPPORTED, "sharded weights are not supported", 0);

    copy_fixture("bin_only", d, sizeof d);
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", d);
    snprintf(q, sizeof q, "%s/text_encoder/pytorch_model.bin", d);
    rename(p, q);
    snprintf(p, sizeof p, "%s/text_encoder/model.fp16.safetensors", d);
    remove(p);
    expect_load("pickle-only component", d, DIFFUSE_ERR_MODEL_UNSAFE, "pytorch_model.bin: pickle", 0);

    copy_fixture("no_weights", d, sizeof d);
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", d);
    remove(p);
    expect_load("component without weights", d, DIFFUSE_ERR_NOT_FOUND, "no weights file", 0);

    copy_fixture("bad_safetensors", d, sizeof d);
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", d);
    if (truncate(p, 100000) != 0) perror("truncate");
    expect_load("truncated component weights", d, DIFFUSE_ERR_MODEL_TRUNCATED, "vae/diffusion_pytorch_model", 0);
}

/* Cases that must load: NaN/Infinity in configs, transformers-4 keys. */
static void test_good_variants(void) {
    char d[1024], p[1200];
    copy_fixture("nan_config", d, sizeof d);
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", d);
    write_text(p, "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"lambda_min_clipped\": -Infinity,\n"
                  " \"variance\": NaN, \"upper\": Infinity, \"prediction_type\": \"v_prediction\"}\n");
    diffuse_model *m = expect_load("scheduler config with NaN/-Infinity", d, DIFFUSE_OK, NULL, 1);
    if (m) {
        struct json_object *v = NULL, *n = NULL;
        json_object_object_get_ex(m->scheduler_config, "lambda_min_clipped", &v);
        json_object_object_get_ex(m->scheduler_config, "variance", &n);
        double x = json_object_get_double(v), y = json_object_get_double(n);
        report(isinf(x) && x < 0 && isnan(y) && m->dims.v_prediction, "  -Infinity and NaN values kept", NULL);
        df_model_free(m);
    }
    copy_fixture("text_model_prefix", d, sizeof d);
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", d);
    edit_st_header(p, edit_add_text_model_prefix, NULL);
    m = expect_load("text encoder with text_model. keys", d, DIFFUSE_OK, NULL, 1);
    if (m) {
        const st_tensor *t = tensor_or_fail(m, DF_COMP_TEXT_ENCODER, "final_layer_norm.weight");
        report(t && strcmp(m->comp[DF_COMP_TEXT_ENCODER].key_prefix, "text_model.") == 0 &&
                   strcmp(t->name, "text_model.final_layer_norm.weight") == 0,
               "  found through key_prefix \"text_model.\"", NULL);
        df_model_free(m);
    }
}

/* ---------------------------------------------------------------------- */
/* Mutations                                                              */
/* ---------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void) { /* xorshift64*: reproducible across runs */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* One random corruption of @b (length *n): mostly in the length field and
 * the header, where the parser is; sometimes a truncation. */
static void mutate(unsigned char *b, size_t *n, size_t header_end) {
    static const char tokens[] = "{}[],:\"0123456789-e.FIU \\";
    uint64_t r = rng_next();
    size_t span = header_end < *n ? header_end : *n;
    switch (r % 6) {
    case 0: b[rng_next() % 8] ^= (unsigned char)(1u << (rng_next() % 8)); break;
    case 1: *n = rng_next() % *n; break;
    case 2: b[8 + rng_next() % (span - 8)] = tokens[rng_next() % (sizeof tokens - 1)]; break;
    case 3: b[rng_next() % *n] ^= (unsigned char)(rng_next() & 0xff); break;
    default: b[8 + rng_next() % (span - 8)] ^= (unsigned char)(1u << (rng_next() % 8)); break;
    }
}

static int status_known(diffuse_status s) {
    return s == DIFFUSE_OK || (s >= DIFFUSE_ERR_INVALID_ARGUMENT && s <= DIFFUSE_ERR_INTERNAL);
}

static void mutation_loop(const char *name, const char *src, int iterations) {
    size_t n0;
    unsigned char *orig = read_all(src, &n0), *b = malloc(n0);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | orig[i];
    char p[512];
    tmp_path(p, sizeof p, "mutant.safetensors");
    int bad = 0, loaded = 0, counts[32] = {0};
    for (int it = 0; it < iterations; it++) {
        size_t n = n0;
        memcpy(b, orig, n0);
        int k = 1 + (int)(rng_next() % 3);
        for (int j = 0; j < k && n > 9; j++) mutate(b, &n, (size_t)(8 + hl));
        write_all(p, b, n);
        diffuse_model *m = NULL;
        df_error err;
        df_error_clear(&err);
        diffuse_status s = df_model_load(p, NULL, &m, &err);
        if (!status_known(s) || (s != DIFFUSE_OK && (m != NULL || err.msg[0] == '\0'))) bad++;
        if (s == DIFFUSE_OK) loaded++;
        counts[(unsigned)s < 32 ? s : 31]++;
        df_model_free(m);
    }
    report(bad == 0, name, "%d runs, %d still loaded, %d FORMAT, %d TRUNCATED, %d UNSAFE, %d other", iterations,
           loaded, counts[DIFFUSE_ERR_MODEL_FORMAT], counts[DIFFUSE_ERR_MODEL_TRUNCATED],
           counts[DIFFUSE_ERR_MODEL_UNSAFE],
           iterations - loaded - counts[DIFFUSE_ERR_MODEL_FORMAT] - counts[DIFFUSE_ERR_MODEL_TRUNCATED] -
               counts[DIFFUSE_ERR_MODEL_UNSAFE]);
    free(orig);
    free(b);
}

/* ---------------------------------------------------------------------- */

static void count_log(diffuse_log_level level, const char *message, void *user) {
    if (level == DIFFUSE_LOG_INFO && strstr(message, "loaded SD1 model")) ++*(int *)user;
}

static void test_logger(void) {
    int lines = 0;
    df_logger lg = {count_log, &lines, DIFFUSE_LOG_INFO};
    diffuse_model *m = NULL;
    df_error err;
    diffuse_status s = df_model_load(g_fixture, &lg, &m, &err);
    report(s == DIFFUSE_OK && lines == 1, "load reports to its logger", "%d INFO line(s)", lines);
    df_model_free(m);
}

int main(void) {
    const char *fx = getenv("DIFFUSE_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    snprintf(g_fixture, sizeof g_fixture, "%s/models/tiny-sd1", fx);
    snprintf(g_single, sizeof g_single, "%s/models/tiny-sd1-single.safetensors", fx);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_model_load_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 2;
    }
    init_base_data();
    test_dtype();
    test_base_valid();
    test_bad_headers();
    test_bad_bytes();
    test_pickles();
    test_paths();
    test_fixture_folder();
    test_fixture_single_vs_folder();
    test_fp16_variant();
    test_bad_tensors();
    test_bad_configs();
    test_bad_weights();
    test_good_variants();
    test_logger();
    char base[512];
    tmp_path(base, sizeof base, "base.safetensors");
    mutation_loop("mutations of the hand-written file", base, 300);
    mutation_loop("mutations of the single-file fixture", g_single, 100);
    nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
