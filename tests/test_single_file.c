/*
 * test_single_file.c - single-file checkpoints in the original (LDM) layout
 * against the same model as a diffusers folder, for a tiny SD1-style model
 * (CLIP, 1x1-conv projections) and a tiny SD2-style one (OpenCLIP with fused
 * qkv and an extra resblock, linear projections, v-prediction). Both forms
 * are rebuilt in a temp dir from tests/fixtures/models/single-file/<m>.json
 * (scripts/make_single_file.py; weights are detweights, the single file's
 * layout was checked against diffusers there). Checks: the single file's
 * diffusers view holds bitwise the folder's tensors (F32, and BF16 files
 * after the same conversion), its inferred configs hold diffusers' values,
 * diffuse_generate gives the same image from both forms and diffusers'
 * image within 1/255; broken files fail with their status and key.
 */
#include "detweights.h"
#include "model/model.h"

#include <diffuse.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static int n_pass, n_fail;
static char g_tmp[512];

static void report(int ok, const char *name, const char *fmt, ...) DF_PRINTF(3, 4);
static void report(int ok, const char *name, const char *fmt, ...) {
    char detail[1024] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    printf("%s  %-52s %s\n", ok ? "ok  " : "FAIL", name, detail);
    ok ? n_pass++ : n_fail++;
}

static struct json_object *jget(struct json_object *o, const char *k) {
    return json_object_object_get(o, k);
}

/* ---------------------------------------------------------------------- */
/* Writing safetensors files                                              */
/* ---------------------------------------------------------------------- */

/* One tensor to write: its values come from a detweights name (F32), from
 * several detweights tensors concatenated ("from"), or 0..n-1 (I64). */
typedef struct wt {
    const char *key;
    int ndim;
    int64_t shape[4];
    int arange;
    struct json_object *from; /* [[component, key], ...] or NULL */
    const char *detw;         /* when from is NULL and !arange */
} wt;

static size_t wt_numel(const wt *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* float32 -> bfloat16, round to nearest even (no NaNs here). */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* The values of @t as float32 (n floats into @buf). */
static void wt_values(const wt *t, float *buf) {
    if (!t->from) {
        dw_fill(t->detw, buf, wt_numel(t));
        return;
    }
    size_t at = 0, parts = json_object_array_length(t->from), each = wt_numel(t) / parts;
    for (size_t i = 0; i < parts; i++, at += each)
        dw_fill(json_object_get_string(json_object_array_get_idx(json_object_array_get_idx(t->from, i), 1)),
                buf + at, each);
}

/* Writes @n tensors as a safetensors file, floats as F32 or BF16 (@bf16).
 * Returns the CRC-32 of the data section, or 0 on an I/O failure. */
static uLong write_st(const char *path, const wt *ts, size_t n, int bf16) {
    struct json_object *h = json_object_new_object();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_new_object(), *shape = json_object_new_array();
        struct json_object *o = json_object_new_array();
        const size_t bytes = wt_numel(&ts[i]) * (ts[i].arange ? 8 : bf16 ? 2 : 4);
        for (int d = 0; d < ts[i].ndim; d++) json_object_array_add(shape, json_object_new_int64(ts[i].shape[d]));
        json_object_array_add(o, json_object_new_int64((int64_t)off));
        json_object_array_add(o, json_object_new_int64((int64_t)(off + bytes)));
        json_object_object_add(e, "dtype", json_object_new_string(ts[i].arange ? "I64" : bf16 ? "BF16" : "F32"));
        json_object_object_add(e, "shape", shape);
        json_object_object_add(e, "data_offsets", o);
        json_object_object_add(h, ts[i].key, e);
        off += bytes;
    }
    const char *text = json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN);
    size_t hl = strlen(text), pad = (8 - hl % 8) % 8;
    FILE *f = fopen(path, "wb");
    uLong crc = crc32(0, NULL, 0);
    int ok = f != NULL;
    if (ok) {
        uint8_t le[8];
        for (int i = 0; i < 8; i++) le[i] = (uint8_t)((hl + pad) >> (8 * i));
        ok = fwrite(le, 1, 8, f) == 8 && fwrite(text, 1, hl, f) == hl && fwrite("        ", 1, pad, f) == pad;
    }
    for (size_t i = 0; ok && i < n; i++) {
        const size_t numel = wt_numel(&ts[i]);
        void *buf = malloc(numel * 8 + 8);
        if (ts[i].arange) {
            for (size_t k = 0; k < numel; k++) ((int64_t *)buf)[k] = (int64_t)k;
        } else {
            wt_values(&ts[i], buf);
            if (bf16)
                for (size_t k = 0; k < numel; k++) ((uint16_t *)buf)[k] = to_bf16(((float *)buf)[k]);
        }
        const size_t bytes = numel * (ts[i].arange ? 8 : bf16 ? 2 : 4);
        crc = crc32(crc, buf, (uInt)bytes);
        ok = fwrite(buf, 1, bytes, f) == bytes;
        free(buf);
    }
    if (f && fclose(f) != 0) ok = 0;
    json_object_put(h);
    return ok ? crc : 0;
}

/* ---------------------------------------------------------------------- */
/* Rebuilding the two forms from the manifest                             */
/* ---------------------------------------------------------------------- */

static void shape_of(struct json_object *a, wt *t) {
    t->ndim = (int)json_object_array_length(a);
    for (int d = 0; d < t->ndim && d < 4; d++) t->shape[d] = json_object_get_int64(json_object_array_get_idx(a, d));
}

static void mkdirs_for(const char *path) {
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
}

/* The diffusers folder: its JSON files and detweights weights. */
static int write_folder(struct json_object *man, const char *dir, int bf16) {
    struct json_object *folder = jget(man, "folder");
    char p[1024];
    int ok = 1;
    json_object_object_foreach(jget(folder, "json"), rel, obj) {
        if (snprintf(p, sizeof p, "%s/%s", dir, rel) >= (int)sizeof p) return 0;
        mkdirs_for(p);
        ok &= json_object_to_file_ext(p, obj, JSON_C_TO_STRING_PRETTY) == 0;
    }
    json_object_object_foreach(jget(folder, "files"), file, list) {
        const size_t n = json_object_array_length(list);
        wt *ts = calloc(n, sizeof *ts);
        for (size_t i = 0; i < n; i++) {
            struct json_object *e = json_object_array_get_idx(list, i);
            ts[i].key = ts[i].detw = json_object_get_string(json_object_array_get_idx(e, 0));
            shape_of(json_object_array_get_idx(e, 1), &ts[i]);
        }
        if (snprintf(p, sizeof p, "%s/%s", dir, file) >= (int)sizeof p) ok = 0;
        mkdirs_for(p);
        ok &= write_st(p, ts, n, bf16) != 0;
        free(ts);
    }
    return ok;
}

/* Changes to the single file for the broken-file cases. */
typedef struct sf_edit {
    const char *drop;        /* leave this key out */
    const char *reshape;     /* give this key... */
    int ndim;                /* ...this shape (same element count) */
    int64_t shape[4];
    const char *add;         /* an extra F32 tensor of shape add_shape */
    int64_t add_shape[2];
    int small_vocab;         /* token embedding of 1000 rows (fast files for mutations) */
} sf_edit;

/* The single file: the manifest's tensors in order (with @ed applied). */
static uLong write_single(struct json_object *man, const char *path, int bf16, const sf_edit *ed) {
    struct json_object *list = jget(man, "single");
    const size_t n = json_object_array_length(list);
    wt *ts = calloc(n + 1, sizeof *ts);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(list, i), *v;
        wt *t = &ts[k];
        t->key = json_object_get_string(jget(e, "key"));
        if (ed && ed->drop && strcmp(ed->drop, t->key) == 0) continue;
        shape_of(jget(e, "shape"), t);
        t->arange = json_object_object_get_ex(e, "arange", &v);
        t->from = jget(e, "from");
        t->detw = json_object_get_string(jget(e, "detw"));
        const size_t klen = strlen(t->key);
        if (ed && ed->small_vocab && klen > 22 && strcmp(t->key + klen - 22, "token_embedding.weight") == 0)
            t->shape[0] = 1000;
        if (ed && ed->reshape && strcmp(ed->reshape, t->key) == 0) {
            t->ndim = ed->ndim;
            memcpy(t->shape, ed->shape, sizeof t->shape);
        }
        k++;
    }
    if (ed && ed->add) ts[k++] = (wt){.key = ed->add, .ndim = 2, .shape = {ed->add_shape[0], ed->add_shape[1]},
                                     .detw = ed->add};
    uLong crc = write_st(path, ts, k, bf16);
    free(ts);
    return crc;
}

/* ---------------------------------------------------------------------- */
/* Checks                                                                 */
/* ---------------------------------------------------------------------- */

static diffuse_model *load_internal(const char *path, df_error *err) {
    diffuse_model *m = NULL;
    df_error_clear(err);
    return df_model_load(path, NULL, &m, err) == DIFFUSE_OK ? m : NULL;
}

/* Every folder tensor is in the view with the same shape and bits, and the
 * view has nothing else. */
static void check_tensors(const char *name, const diffuse_model *s, const diffuse_model *f) {
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        const st_file *ff = f->comp[c].weights, *view = s->sf_view[c];
        const size_t plen = strlen(f->comp[c].key_prefix);
        size_t same = 0, bad = 0;
        const char *first_bad = "";
        for (size_t i = 0; view && i < ff->n_tensors; i++) {
            const st_tensor *a = &ff->tensors[i], *b = st_find(view, a->name + plen);
            int ok = b && b->f32 && b->dtype == a->dtype && b->ndim == a->ndim && b->numel == a->numel &&
                     memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0 &&
                     memcmp(a->f32, b->f32, a->numel * sizeof(float)) == 0;
            if (ok) same++;
            else if (!bad++) first_bad = a->name;
        }
        char label[160];
        snprintf(label, sizeof label, "  %s %s: view == folder", name, df_component_name((df_component)c));
        report(view && bad == 0 && same == ff->n_tensors && view->n_tensors == ff->n_tensors, label,
               "%zu of %zu bitwise equal, view holds %zu%s%s", same, ff->n_tensors, view ? view->n_tensors : 0,
               bad ? ", first bad " : "", first_bad);
    }
}

/* Inferred configs hold what diffusers' configs hold ("expect"). */
static void check_configs(const char *name, const diffuse_model *s, struct json_object *man) {
    static const char *const comps[] = {"unet", "vae", "text_encoder"};
    struct json_object *expect = jget(man, "expect");
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        int bad = 0;
        char what[256] = "";
        json_object_object_foreach(jget(expect, comps[c]), key, want) {
            struct json_object *got = s->sf_config[c] ? jget(s->sf_config[c], key) : NULL;
            if (!json_object_equal(got, want) && !bad++)
                snprintf(what, sizeof what, "%s: got %s, want %s", key, json_object_to_json_string(got),
                         json_object_to_json_string(want));
        }
        char label[160];
        snprintf(label, sizeof label, "  %s inferred %s config", name, comps[c]);
        report(!bad, label, "%s", what);
    }
    struct json_object *heads = s->sf_config[0] ? jget(s->sf_config[0], "attention_head_dim") : NULL;
    report(json_object_equal(heads, jget(expect, "unet_heads")), "  heads per level",
           "%s", json_object_to_json_string(heads));
    struct json_object *sc = jget(expect, "scheduler");
    struct json_object *have = s->scheduler_config;
    int ok = have && json_object_equal(jget(have, "_class_name"), jget(sc, "_class_name")) &&
             json_object_equal(jget(have, "prediction_type"), jget(sc, "prediction_type"));
    report(ok, "  scheduler class and prediction type", "%s", json_object_to_json_string(sc));
}

static void check_dims(const char *name, const diffuse_model *s, const diffuse_model *f) {
    const df_model_dims *a = &s->dims, *b = &f->dims;
    int ok = a->unet_in_channels == b->unet_in_channels && a->unet_out_channels == b->unet_out_channels &&
             a->unet_sample_size == b->unet_sample_size && a->cross_attention_dim == b->cross_attention_dim &&
             a->vae_in_channels == b->vae_in_channels && a->latent_channels == b->latent_channels &&
             a->vae_scale_factor == b->vae_scale_factor && a->text_hidden_size == b->text_hidden_size &&
             a->text_layers == b->text_layers && a->text_vocab_size == b->text_vocab_size &&
             a->text_max_positions == b->text_max_positions && a->v_prediction == b->v_prediction;
    for (int c = 0; c < DF_COMP_COUNT; c++) ok = ok && s->comp[c].n_params == f->comp[c].n_params;
    char label[160];
    snprintf(label, sizeof label, "  %s dims, family, parameter counts", name);
    report(ok && s->family == f->family && s->single_file && !f->single_file, label,
           "sample %lld, v_pred %d, %llu + %llu + %llu parameters", (long long)a->unet_sample_size, a->v_prediction,
           (unsigned long long)s->comp[0].n_params, (unsigned long long)s->comp[1].n_params,
           (unsigned long long)s->comp[2].n_params);
}

/* ---------------------------------------------------------------------- */
/* Images through the public API                                          */
/* ---------------------------------------------------------------------- */

/* diffuse_generate on the model at @path with the manifest's call; the
 * (H, W, 3) pixels, malloc'ed, or NULL (reported). */
static uint8_t *generate(const char *label, const char *path, struct json_object *g) {
    diffuse_model *model = NULL;
    diffuse_ctx *ctx = NULL;
    diffuse_images *out = NULL;
    uint8_t *px = NULL;
    char msg[1024] = "";
    diffuse_model_params mp;
    diffuse_model_params_init(&mp);
    mp.error_buf = msg;
    mp.error_buf_size = sizeof msg;
    diffuse_status st = diffuse_model_load(path, &mp, &model);
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = DIFFUSE_DEVICE_CPU;
    if (st == DIFFUSE_OK) st = diffuse_ctx_create(model, &cp, &ctx);
    diffuse_generate_params p;
    diffuse_generate_params_init(&p);
    p.prompt = json_object_get_string(jget(g, "prompt"));
    p.negative_prompt = json_object_get_string(jget(g, "negative_prompt"));
    p.width = (uint32_t)json_object_get_int(jget(g, "width"));
    p.height = (uint32_t)json_object_get_int(jget(g, "height"));
    p.steps = (uint32_t)json_object_get_int(jget(g, "steps"));
    p.guidance_scale = (float)json_object_get_double(jget(g, "guidance"));
    p.seed = (uint64_t)json_object_get_int64(jget(g, "seed"));
    if (st == DIFFUSE_OK) st = diffuse_generate(ctx, &p, &out);
    if (st == DIFFUSE_OK && out->count == 1 && out->images[0].format == DIFFUSE_PIXEL_RGB8) {
        const diffuse_image *im = &out->images[0];
        px = malloc((size_t)im->width * im->height * 3);
        for (uint32_t y = 0; y < im->height; y++)
            memcpy(px + (size_t)y * im->width * 3, im->data + (size_t)y * im->stride, (size_t)im->width * 3);
    } else {
        report(0, label, "%s: %s", diffuse_status_string(st), ctx ? diffuse_ctx_last_error(ctx) : msg);
    }
    diffuse_images_free(out);
    diffuse_ctx_free(ctx);
    diffuse_model_free(model);
    return px;
}

/* Largest difference and share of values within 1/255. */
static int image_diff(const uint8_t *a, const uint8_t *b, size_t n, double *close) {
    int max = 0;
    size_t near = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        max = d > max ? d : max;
        near += d <= 1;
    }
    *close = n ? (double)near / (double)n : 0.0;
    return max;
}

/* Folder and single file give the same image, and diffusers' within 1/255. */
static void check_images(const char *name, const char *folder, const char *single, struct json_object *man,
                         int vs_reference) {
    struct json_object *g = jget(man, "generate");
    const size_t n = (size_t)json_object_get_int(jget(g, "width")) * (size_t)json_object_get_int(jget(g, "height")) * 3;
    char label[160];
    snprintf(label, sizeof label, "  %s generate: single file == folder", name);
    uint8_t *a = generate(label, folder, g), *b = generate(label, single, g);
    double close;
    if (a && b) {
        int max = image_diff(b, a, n, &close);
        report(max == 0, label, "max diff %d over %zu values", max, n);
    }
    const char *hex = json_object_get_string(jget(g, "image_hex"));
    if (b && vs_reference && hex && strlen(hex) == 2 * n) {
        uint8_t *ref = malloc(n);
        for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &ref[i]);
        int max = image_diff(b, ref, n, &close);
        snprintf(label, sizeof label, "  %s generate: single file vs diffusers", name);
        report(close >= 0.999 && max <= 3, label, "%.2f%% within 1/255, max diff %d", 100.0 * close, max);
        free(ref);
    }
    free(a);
    free(b);
}

/* ---------------------------------------------------------------------- */
/* Broken files                                                           */
/* ---------------------------------------------------------------------- */

static void expect_broken(struct json_object *man, const char *name, const sf_edit *ed, diffuse_status want,
                          const char *substr) {
    char path[1024];
    df_error err;
    snprintf(path, sizeof path, "%s/broken.safetensors", g_tmp);
    write_single(man, path, 0, ed);
    diffuse_model *m = load_internal(path, &err);
    int ok = !m && err.status == want && (!substr || strstr(err.msg, substr));
    report(ok, name, "%s: %s", diffuse_status_string(m ? DIFFUSE_OK : err.status), m ? "loaded" : err.msg);
    df_model_free(m);
}

static void check_broken(struct json_object *sd1, struct json_object *sd2) {
    const char *P = "model.diffusion_model.";
    char k1[256], k2[256], k3[256];
    snprintf(k1, sizeof k1, "%sinput_blocks.1.0.out_layers.3.weight", P);
    sf_edit e1 = {.drop = k1};
    expect_broken(sd1, "broken: UNet resnet conv missing", &e1, DIFFUSE_ERR_MODEL_MISSING_TENSOR, k1);
    snprintf(k2, sizeof k2, "%sinput_blocks.1.0.in_layers.0.bias", P);
    sf_edit e2 = {.drop = k2};
    expect_broken(sd1, "broken: a resnet norm bias missing", &e2, DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                  "down_blocks.0.resnets.0.norm1.bias");
    sf_edit e3 = {.drop = "first_stage_model.decoder.conv_in.weight"};
    expect_broken(sd1, "broken: VAE decoder conv_in missing", &e3, DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                  "first_stage_model.decoder.conv_in.weight");
    const char *qkv = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight";
    sf_edit e4 = {.reshape = qkv, .ndim = 2, .shape = {128, 384}};
    expect_broken(sd2, "broken: OpenCLIP in_proj_weight transposed", &e4, DIFFUSE_ERR_MODEL_SHAPE, qkv);
    snprintf(k3, sizeof k3, "%slabel_emb.0.0.weight", P);
    sf_edit e5 = {.add = k3, .add_shape = {256, 64}};
    expect_broken(sd1, "broken: class-conditioned UNet refused", &e5, DIFFUSE_ERR_UNSUPPORTED, "label_emb");
    sf_edit e6 = {.add = "model.diffusion_model.output_blocks.5.1.conv.weight", .add_shape = {64, 64}};
    expect_broken(sd1, "broken: two keys map to one name", &e6, DIFFUSE_ERR_MODEL_FORMAT,
                  "up_blocks.1.upsamplers.0.conv.weight");
    sf_edit e7 = {.reshape = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", .ndim = 2,
                  .shape = {49408 * 2, 64}};
    expect_broken(sd1, "broken: text embedding widths disagree", &e7, DIFFUSE_ERR_MODEL_SHAPE,
                  "position_embedding.weight\" has shape [77, 128]; dimension 1 should be 64");
}

/* Random single-tensor damage (a key dropped, or its dimensions swapped):
 * every run loads or fails with a model status and a message, no crash,
 * no leak (the sanitizer build runs this too). */
static void check_mutations(struct json_object *man, const char *name, int iterations) {
    struct json_object *list = jget(man, "single");
    const size_t n = json_object_array_length(list);
    uint64_t r = 0x2545f4914f6cdd1dull ^ dw_fnv1a64(name);
    int loaded = 0, bad = 0, counts[32] = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s/mutant.safetensors", g_tmp);
    for (int it = 0; it < iterations; it++) {
        r ^= r >> 12, r ^= r << 25, r ^= r >> 27;
        const uint64_t x = r * 0x2545f4914f6cdd1dull;
        struct json_object *e = json_object_array_get_idx(list, (size_t)(x % n));
        wt t = {0};
        shape_of(jget(e, "shape"), &t);
        sf_edit ed = {.small_vocab = 1, .ndim = t.ndim < 2 ? 2 : t.ndim};
        const char *key = json_object_get_string(jget(e, "key"));
        if ((x >> 32) & 1) {
            ed.drop = key;
        } else {
            ed.reshape = key;
            memcpy(ed.shape, t.shape, sizeof ed.shape);
            ed.shape[0] = t.ndim < 2 ? 1 : t.shape[1];
            ed.shape[1] = t.ndim < 2 ? (int64_t)wt_numel(&t) : t.shape[0];
        }
        write_single(man, path, 0, &ed);
        df_error err;
        diffuse_model *m = load_internal(path, &err);
        const diffuse_status st = m ? DIFFUSE_OK : err.status;
        const int model_status = st == DIFFUSE_ERR_MODEL_MISSING_TENSOR || st == DIFFUSE_ERR_MODEL_SHAPE ||
                                 st == DIFFUSE_ERR_MODEL_FORMAT || st == DIFFUSE_ERR_UNSUPPORTED ||
                                 st == DIFFUSE_ERR_MODEL_CONFIG;
        if (m) loaded++;
        else if (!model_status || !err.msg[0]) bad++, printf("      %s: %s\n", key, err.msg);
        counts[(unsigned)st < 32 ? st : 31]++;
        df_model_free(m);
    }
    char label[128];
    snprintf(label, sizeof label, "mutations of the %s single file", name);
    report(bad == 0, label, "%d runs: %d loaded, %d MISSING_TENSOR, %d SHAPE, %d other", iterations, loaded,
           counts[DIFFUSE_ERR_MODEL_MISSING_TENSOR], counts[DIFFUSE_ERR_MODEL_SHAPE],
           iterations - loaded - counts[DIFFUSE_ERR_MODEL_MISSING_TENSOR] - counts[DIFFUSE_ERR_MODEL_SHAPE]);
}

/* An extra unknown tensor loads (with a warning); a file without the
 * original layout is recognised but cannot generate. */
static void warn_count(diffuse_log_level level, const char *message, void *user) {
    if (level == DIFFUSE_LOG_WARN && strstr(message, "outside the original")) ++*(int *)user;
}

static void check_tolerated(struct json_object *sd1, const char *fixtures) {
    char path[1024];
    int warns = 0;
    snprintf(path, sizeof path, "%s/extra.safetensors", g_tmp);
    sf_edit e = {.add = "model.diffusion_model.some_future_thing.weight", .add_shape = {2, 2}};
    write_single(sd1, path, 0, &e);
    df_logger lg = {warn_count, &warns, DIFFUSE_LOG_WARN};
    diffuse_model *m = NULL;
    df_error err;
    diffuse_status st = df_model_load(path, &lg, &m, &err);
    report(st == DIFFUSE_OK && warns == 1 && m->unet_net, "unknown extra tensor: loads, one warning",
           "%s, %d warning(s)", diffuse_status_string(st), warns);
    df_model_free(m);
    snprintf(path, sizeof path, "%s/models/tiny-sd1-single.safetensors", fixtures);
    m = load_internal(path, &err);
    report(m && !m->sf_view[0] && !m->unet_net && m->comp[0].config == NULL,
           "diffusers names under LDM prefixes: recognised only", "%s", m ? "no view, no networks" : err.msg);
    df_model_free(m);
}

/* ---------------------------------------------------------------------- */

static struct json_object *load_manifest(const char *fixtures, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/single-file/%s.json", fixtures, name);
    struct json_object *man = json_object_from_file(path);
    const char *fmt = man ? json_object_get_string(jget(man, "format")) : NULL;
    report(fmt && strcmp(fmt, "libdiffuse single-file fixture 1") == 0, "manifest", "%s", path);
    return man;
}

/* One model, F32 (with images) or BF16 (views only, plus images when @images). */
static void check_model(const char *name, struct json_object *man, int bf16) {
    char folder[1024], single[1024], label[160];
    snprintf(folder, sizeof folder, "%s/%s-%s", g_tmp, name, bf16 ? "bf16" : "f32");
    snprintf(single, sizeof single, "%s/%s-%s.safetensors", g_tmp, name, bf16 ? "bf16" : "f32");
    int ok = write_folder(man, folder, bf16);
    uLong crc = write_single(man, single, bf16, NULL);
    snprintf(label, sizeof label, "%s %s: files written", name, bf16 ? "BF16" : "F32");
    char want[16];
    snprintf(want, sizeof want, "%08lx", crc);
    const char *digest = json_object_get_string(jget(man, "digest"));
    report(ok && crc && (bf16 || (digest && strcmp(digest, want) == 0)), label,
           bf16 ? "BF16 single file" : "CRC %s, diffusers checked %s", want, digest);
    df_error e1, e2;
    diffuse_model *s = load_internal(single, &e1), *f = load_internal(folder, &e2);
    snprintf(label, sizeof label, "  %s loads (single file, folder)", name);
    report(s && f && s->unet_net && s->vae_net && s->text_net, label, "%s%s", s ? "" : e1.msg, f ? "" : e2.msg);
    if (s && f) {
        check_tensors(name, s, f);
        check_dims(name, s, f);
        if (!bf16) check_configs(name, s, man);
    }
    df_model_free(s);
    df_model_free(f);
    check_images(name, folder, single, man, !bf16);
}

static int rm_tree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

int main(void) {
    const char *fx = getenv("DIFFUSE_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_single_file_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 2;
    }
    struct json_object *sd1 = load_manifest(fx, "sd1"), *sd2 = load_manifest(fx, "sd2");
    if (sd1 && sd2) {
        check_model("sd1", sd1, 0);
        check_model("sd2", sd2, 0);
        check_model("sd2", sd2, 1);
        check_broken(sd1, sd2);
        check_tolerated(sd1, fx);
        check_mutations(sd1, "sd1", 24);
        check_mutations(sd2, "sd2", 24);
    }
    json_object_put(sd1);
    json_object_put(sd2);
    rm_tree(g_tmp);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
