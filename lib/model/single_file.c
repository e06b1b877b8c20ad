/*
 * single_file.c - the diffusers view of an original-layout single-file
 * checkpoint (see single_file.h): infers each component's config.json from
 * the tensor shapes, then presents every tensor under its diffusers name as
 * a view of the file's float32 data, so model_nets.c builds the networks
 * exactly as for a diffusers folder.
 */
#include "model/single_file.h"

#include "nets/unet.h"
#include "nets/vae.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SF_TRY(expr)                            \
    do {                                        \
        diffuse_status sf_st_ = (expr);         \
        if (sf_st_ != DIFFUSE_OK) return sf_st_; \
    } while (0)

#define SF_NAME 512          /* longest tensor name handled */
#define SF_GROUPS 32         /* GroupNorm groups of every SD 1.x/2.x network */
#define SF_HEAD_DIM 64       /* SD 2.x UNet and CLIP/OpenCLIP head width */
#define SF_SD1_HEADS 8       /* SD 1.x UNet heads per level */
#define SF_MAX_BLOCKS 4096   /* bound on block indices walked */

/* ---------------------------------------------------------------------- */
/* The source file: lookups under a component prefix                      */
/* ---------------------------------------------------------------------- */

typedef struct sf_src {
    const st_file *f;
    const char *prefix; /* "model.diffusion_model.", ... */
    const char *what;   /* "UNet", "VAE", "text encoder" */
} sf_src;

/* Writes prefix + formatted rest into @key; 0 when it does not fit. */
static int sf_keyv(const sf_src *s, char *key, size_t cap, const char *fmt, va_list ap) {
    int n = snprintf(key, cap, "%s", s->prefix);
    if (n < 0 || (size_t)n >= cap) return 0;
    int k = vsnprintf(key + n, cap - (size_t)n, fmt, ap);
    return k >= 0 && (size_t)k < cap - (size_t)n;
}

/* The tensor prefix + fmt, or NULL. */
static const st_tensor *sf_find(const sf_src *s, const char *fmt, ...) DF_PRINTF(2, 3);
static const st_tensor *sf_find(const sf_src *s, const char *fmt, ...) {
    char key[SF_NAME];
    va_list ap;
    va_start(ap, fmt);
    int ok = sf_keyv(s, key, sizeof key, fmt, ap);
    va_end(ap);
    return ok ? st_find(s->f, key) : NULL;
}

/* 1 if some tensor name starts with prefix + fmt (binary search: the
 * table is sorted by name). */
static int sf_has(const sf_src *s, const char *fmt, ...) DF_PRINTF(2, 3);
static int sf_has(const sf_src *s, const char *fmt, ...) {
    char key[SF_NAME];
    va_list ap;
    va_start(ap, fmt);
    int ok = sf_keyv(s, key, sizeof key, fmt, ap);
    va_end(ap);
    if (!ok) return 0;
    size_t lo = 0, hi = s->f->n_tensors, k = strlen(key);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(s->f->tensors[mid].name, key) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->f->n_tensors && strncmp(s->f->tensors[lo].name, key, k) == 0;
}

/* The float tensor prefix + fmt with @ndim dimensions (any when -1), or an
 * error naming the original key. */
static diffuse_status sf_need(const sf_src *s, df_error *err, int ndim, const st_tensor **out, const char *fmt, ...)
    DF_PRINTF(5, 6);
static diffuse_status sf_need(const sf_src *s, df_error *err, int ndim, const st_tensor **out, const char *fmt, ...) {
    char key[SF_NAME], got[128];
    va_list ap;
    va_start(ap, fmt);
    int ok = sf_keyv(s, key, sizeof key, fmt, ap);
    va_end(ap);
    const st_tensor *t = ok ? st_find(s->f, key) : NULL;
    if (!t)
        return df_fail(err, DIFFUSE_ERR_MODEL_MISSING_TENSOR, "%s: single-file %s: missing tensor \"%s\"", s->f->path,
                       s->what, key);
    if (!st_dtype_is_weight(t->dtype))
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: tensor \"%s\" has dtype %s; weights must be F32, F16 or BF16",
                       s->f->path, key, st_dtype_name(t->dtype));
    if (ndim >= 0 && t->ndim != ndim)
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor \"%s\" has shape %s, expected %d dimensions",
                       s->f->path, key, st_shape_str(t->shape, t->ndim, got, sizeof got), ndim);
    *out = t;
    return DIFFUSE_OK;
}

/* Counts consecutive indices i = 0, 1, ... with a tensor under fmt % i. */
static int sf_count(const sf_src *s, const char *fmt) {
    int n = 0;
    while (n < SF_MAX_BLOCKS && sf_has(s, fmt, n)) n++;
    return n;
}

static diffuse_status sf_shape_fail(const sf_src *s, const st_tensor *t, int64_t want_dim, int axis, const char *why,
                                    df_error *err) {
    char got[128];
    return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor \"%s\" has shape %s; dimension %d should be %lld (%s)",
                   s->f->path, t->name, st_shape_str(t->shape, t->ndim, got, sizeof got), axis, (long long)want_dim,
                   why);
}

/* ---------------------------------------------------------------------- */
/* JSON configs                                                           */
/* ---------------------------------------------------------------------- */

typedef struct sf_json {
    struct json_object *o;
    int bad; /* an allocation failed */
} sf_json;

static void js_put(sf_json *j, const char *key, struct json_object *v) {
    if (!v || json_object_object_add(j->o, key, v) != 0) {
        json_object_put(v);
        j->bad = 1;
    }
}
static void js_int(sf_json *j, const char *key, int64_t v) { js_put(j, key, json_object_new_int64(v)); }
static void js_bool(sf_json *j, const char *key, int v) { js_put(j, key, json_object_new_boolean(v)); }
static void js_double(sf_json *j, const char *key, double v) { js_put(j, key, json_object_new_double(v)); }
static void js_str(sf_json *j, const char *key, const char *v) { js_put(j, key, json_object_new_string(v)); }

static void js_int_list(sf_json *j, const char *key, const int *v, int n) {
    struct json_object *a = json_object_new_array();
    for (int i = 0; a && i < n; i++)
        if (json_object_array_add(a, json_object_new_int(v[i])) != 0) j->bad = 1;
    js_put(j, key, a);
}

/* @n strings: @yes where flags[i] (or flags NULL), @no otherwise. */
static void js_str_list(sf_json *j, const char *key, const int *flags, int n, const char *yes, const char *no) {
    struct json_object *a = json_object_new_array();
    for (int i = 0; a && i < n; i++)
        if (json_object_array_add(a, json_object_new_string(!flags || flags[i] ? yes : no)) != 0) j->bad = 1;
    js_put(j, key, a);
}

static diffuse_status js_finish(sf_json *j, struct json_object **out, const char *what, df_error *err) {
    if (!j->o || j->bad) {
        json_object_put(j->o);
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory building the %s config of a single file", what);
    }
    *out = j->o;
    return DIFFUSE_OK;
}

/* ---------------------------------------------------------------------- */
/* Virtual files: views of the source tensors under new names             */
/* ---------------------------------------------------------------------- */

typedef struct sf_entry {
    st_tensor t;          /* t.name set at the end (the pool may move) */
    size_t name_at;       /* offset of the name in the pool */
    const char *orig;     /* the source tensor's key */
} sf_entry;

typedef struct sf_vb {
    sf_entry *e;
    size_t n, cap;
    char *pool;
    size_t pool_len, pool_cap;
} sf_vb;

static void vb_free(sf_vb *b) {
    free(b->e);
    free(b->pool);
    memset(b, 0, sizeof *b);
}

/* Reserves room for one entry and @name_len + 1 pool bytes. */
static int vb_grow(sf_vb *b, size_t name_len) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        sf_entry *e = realloc(b->e, cap * sizeof *e);
        if (!e) return 0;
        b->e = e;
        b->cap = cap;
    }
    if (b->pool_len + name_len + 1 > b->pool_cap) {
        size_t cap = b->pool_cap ? 2 * b->pool_cap : 16384;
        while (cap < b->pool_len + name_len + 1) cap *= 2;
        char *p = realloc(b->pool, cap);
        if (!p) return 0;
        b->pool = p;
        b->pool_cap = cap;
    }
    return 1;
}

/* Adds @name as rows [row0, row0 + rows) of @src (all of it for a scalar)
 * with the shape @shape; the element count must match. */
static diffuse_status vb_add(sf_vb *b, const char *name, const st_tensor *src, int64_t row0, int64_t rows, int ndim,
                             const int64_t *shape, df_error *err) {
    const size_t row = src->ndim && src->shape[0] ? src->numel / (size_t)src->shape[0] : (src->ndim ? 0 : 1);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= (size_t)shape[d];
    if (numel != (size_t)rows * row || row0 < 0 || (size_t)(row0 + rows) * row > src->numel)
        return df_fail(err, DIFFUSE_ERR_INTERNAL, "single-file view %s of %s: %zu elements from %lld rows of %zu",
                       name, src->name, numel, (long long)rows, row);
    const size_t len = strlen(name), esz = st_dtype_size(src->dtype);
    if (!vb_grow(b, len)) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory building a single-file view");
    sf_entry *e = &b->e[b->n++];
    memset(e, 0, sizeof *e);
    e->orig = src->name;
    e->name_at = b->pool_len;
    memcpy(b->pool + b->pool_len, name, len + 1);
    b->pool_len += len + 1;
    st_tensor *t = &e->t;
    t->dtype = src->dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = numel;
    t->nbytes = numel * esz;
    t->offset = src->offset + (size_t)row0 * row * esz;
    t->data = (const uint8_t *)src->data + (size_t)row0 * row * esz;
    t->f32 = src->f32 ? src->f32 + (size_t)row0 * row : NULL;
    return DIFFUSE_OK;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const sf_entry *)a)->t.name, ((const sf_entry *)b)->t.name);
}

/* Turns the entries into a sorted virtual st_file named after the prefix
 * (the networks' messages put the file's path in front); refuses
 * two source tensors that map to one name. Frees the builder. */
static diffuse_status vb_finish(sf_vb *b, const sf_src *s, st_file **out, df_error *err) {
    st_file *f = calloc(1, sizeof *f);
    st_tensor *ts = calloc(b->n ? b->n : 1, sizeof *ts);
    if (!f || !ts) {
        free(f);
        free(ts);
        vb_free(b);
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory building a single-file view");
    }
    for (size_t i = 0; i < b->n; i++) b->e[i].t.name = b->pool + b->e[i].name_at;
    qsort(b->e, b->n, sizeof *b->e, cmp_entry);
    for (size_t i = 1; i < b->n; i++) {
        if (strcmp(b->e[i].t.name, b->e[i - 1].t.name) == 0) {
            diffuse_status st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                                        "%s: single-file %s: tensors \"%s\" and \"%s\" both map to diffusers name %s",
                                        s->f->path, s->what, b->e[i - 1].orig, b->e[i].orig, b->e[i].t.name);
            free(f);
            free(ts);
            vb_free(b);
            return st;
        }
    }
    for (size_t i = 0; i < b->n; i++) ts[i] = b->e[i].t;
    f->tensors = ts;
    f->n_tensors = b->n;
    f->names = b->pool; /* owned by the file now (st_close frees it) */
    b->pool = NULL;
    snprintf(f->path, sizeof f->path, "%s* read under diffusers names", s->prefix);
    vb_free(b);
    *out = f;
    return DIFFUSE_OK;
}

/* ---------------------------------------------------------------------- */
/* Name mapping                                                           */
/* ---------------------------------------------------------------------- */

/* What a source tensor becomes in the view. */
typedef enum sf_how {
    SF_UNKNOWN = 0, /* not part of the layout: ignored with a warning */
    SF_SAME,        /* renamed, same shape */
    SF_LINEAR,      /* 1x1 conv (C, C, 1[, 1]) shown as a linear (C, C) */
    SF_QKV,         /* fused (3C[, C]) rows split into q/k/v_proj */
    SF_DROP         /* known, unused */
} sf_how;

typedef sf_how (*sf_map_fn)(const void *ctx, const char *rest, char *out, size_t cap);

static int eat(const char **p, const char *lit) {
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n) != 0) return 0;
    *p += n;
    return 1;
}

/* A decimal index (no sign, at most 6 digits) followed by '.'. */
static int eat_index(const char **p, int *out) {
    const char *s = *p;
    int v = 0, n = 0;
    for (; *s >= '0' && *s <= '9' && n < 6; s++, n++) v = v * 10 + (*s - '0');
    if (n == 0 || *s != '.') return 0;
    *out = v;
    *p = s + 1;
    return 1;
}

static sf_how fmt_name(char *out, size_t cap, sf_how how, const char *fmt, ...) DF_PRINTF(4, 5);
static sf_how fmt_name(char *out, size_t cap, sf_how how, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < cap ? how : SF_UNKNOWN;
}

/* @rest with a leading @from replaced by @to from a (from, to) table. */
static sf_how map_table(const char *const (*table)[2], size_t n, const char *rest, char *out, size_t cap) {
    for (size_t i = 0; i < n; i++) {
        const char *p = rest;
        if (eat(&p, table[i][0])) return fmt_name(out, cap, SF_SAME, "%s%s", table[i][1], p);
    }
    return SF_UNKNOWN;
}

/* An LDM UNet resnet's leaf under the diffusers @base. */
static sf_how map_unet_resnet(const char *base, const char *rest, char *out, size_t cap) {
    static const char *const t[][2] = {{"in_layers.0.", "norm1."},        {"in_layers.2.", "conv1."},
                                       {"out_layers.0.", "norm2."},       {"out_layers.3.", "conv2."},
                                       {"emb_layers.1.", "time_emb_proj."}, {"skip_connection.", "conv_shortcut."}};
    char leaf[SF_NAME];
    if (map_table(t, sizeof t / sizeof t[0], rest, leaf, sizeof leaf) != SF_SAME) return SF_UNKNOWN;
    return fmt_name(out, cap, SF_SAME, "%s%s", base, leaf);
}

typedef struct sf_unet_info {
    int cin, cout, c0, k_in, k_out, temb;
    int levels, layers;
    int ch[UNET_MAX_LEVELS], down_attn[UNET_MAX_LEVELS], up_attn[UNET_MAX_LEVELS], depth[UNET_MAX_LEVELS];
    int heads[UNET_MAX_LEVELS];
    int linear;    /* -1 until an attention's proj_in is seen */
    int cross_dim; /* 0 until an attention's attn2.to_k is seen */
} sf_unet_info;

/* model.diffusion_model.<rest> -> diffusers UNet name (convert_ldm_unet_checkpoint). */
static sf_how map_unet(const void *ctx, const char *rest, char *out, size_t cap) {
    static const char *const top[][2] = {{"time_embed.0.", "time_embedding.linear_1."},
                                         {"time_embed.2.", "time_embedding.linear_2."},
                                         {"input_blocks.0.0.", "conv_in."}, {"out.0.", "conv_norm_out."},
                                         {"out.2.", "conv_out."}};
    const int l1 = ((const sf_unet_info *)ctx)->layers + 1;
    char base[128];
    int i, k;
    if (map_table(top, sizeof top / sizeof top[0], rest, out, cap) == SF_SAME) return SF_SAME;
    const char *p = rest;
    if (eat(&p, "input_blocks.") && eat_index(&p, &i) && eat_index(&p, &k) && i >= 1) {
        const int b = (i - 1) / l1, j = (i - 1) % l1;
        if (k == 0 && eat(&p, "op.")) return fmt_name(out, cap, SF_SAME, "down_blocks.%d.downsamplers.0.conv.%s", b, p);
        snprintf(base, sizeof base, "down_blocks.%d.resnets.%d.", b, j);
        if (k == 0) return map_unet_resnet(base, p, out, cap);
        return k == 1 ? fmt_name(out, cap, SF_SAME, "down_blocks.%d.attentions.%d.%s", b, j, p) : SF_UNKNOWN;
    }
    p = rest;
    if (eat(&p, "middle_block.") && eat_index(&p, &k)) {
        if (k == 1) return fmt_name(out, cap, SF_SAME, "mid_block.attentions.0.%s", p);
        snprintf(base, sizeof base, "mid_block.resnets.%d.", k / 2);
        return k == 0 || k == 2 ? map_unet_resnet(base, p, out, cap) : SF_UNKNOWN;
    }
    p = rest;
    if (eat(&p, "output_blocks.") && eat_index(&p, &i) && eat_index(&p, &k)) {
        const int b = i / l1, j = i % l1;
        if ((k == 1 || k == 2) && eat(&p, "conv."))
            return fmt_name(out, cap, SF_SAME, "up_blocks.%d.upsamplers.0.conv.%s", b, p);
        snprintf(base, sizeof base, "up_blocks.%d.resnets.%d.", b, j);
        if (k == 0) return map_unet_resnet(base, p, out, cap);
        return k == 1 ? fmt_name(out, cap, SF_SAME, "up_blocks.%d.attentions.%d.%s", b, j, p) : SF_UNKNOWN;
    }
    return SF_UNKNOWN;
}

typedef struct sf_vae_info {
    int levels, layers, ch[VAE_MAX_LEVELS];
    int cin, cout, latent, mid_attn, quant, post_quant;
} sf_vae_info;

/* The leaf of an LDM VAE resnet (only nin_shortcut is renamed). */
static sf_how map_vae_resnet(const char *half, const char *mid, int a, int j, const char *p, char *out,
                             size_t cap) {
    const char *rename = eat(&p, "nin_shortcut.") ? "conv_shortcut." : "";
    return fmt_name(out, cap, SF_SAME, "%s.%s.%d.resnets.%d.%s%s", half, mid, a, j, rename, p);
}

/* The mid block of one half: block_1/2 and attn_1. */
static sf_how map_vae_mid(const char *half, const char *p, char *out, size_t cap) {
    static const char *const attn[][2] = {{"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."},
                                          {"v.", "to_v."},          {"proj_out.", "to_out.0."}};
    if (eat(&p, "block_1.")) return fmt_name(out, cap, SF_SAME, "%s.mid_block.resnets.0.%s", half, p);
    if (eat(&p, "block_2.")) return fmt_name(out, cap, SF_SAME, "%s.mid_block.resnets.1.%s", half, p);
    if (!eat(&p, "attn_1.")) return SF_UNKNOWN;
    for (size_t i = 0; i < sizeof attn / sizeof attn[0]; i++) {
        const char *leaf = p;
        if (!eat(&leaf, attn[i][0])) continue;
        sf_how how = i > 0 && strcmp(leaf, "weight") == 0 ? SF_LINEAR : SF_SAME;
        return fmt_name(out, cap, how, "%s.mid_block.attentions.0.%s%s", half, attn[i][1], leaf);
    }
    return SF_UNKNOWN;
}

/* first_stage_model.<rest> -> diffusers VAE name (convert_ldm_vae_checkpoint). */
static sf_how map_vae(const void *ctx, const char *rest, char *out, size_t cap) {
    static const char *const top[][2] = {
        {"encoder.conv_in.", "encoder.conv_in."},   {"encoder.conv_out.", "encoder.conv_out."},
        {"encoder.norm_out.", "encoder.conv_norm_out."}, {"decoder.conv_in.", "decoder.conv_in."},
        {"decoder.conv_out.", "decoder.conv_out."}, {"decoder.norm_out.", "decoder.conv_norm_out."},
        {"quant_conv.", "quant_conv."},             {"post_quant_conv.", "post_quant_conv."}};
    const int n = ((const sf_vae_info *)ctx)->levels;
    if (map_table(top, sizeof top / sizeof top[0], rest, out, cap) == SF_SAME) return SF_SAME;
    const char *p = rest, *half = eat(&p, "encoder.") ? "encoder" : eat(&p, "decoder.") ? "decoder" : NULL;
    int i, j;
    if (!half) return SF_UNKNOWN;
    if (eat(&p, "mid.")) return map_vae_mid(half, p, out, cap);
    const int down = eat(&p, "down.");
    if (!down && !eat(&p, "up.")) return SF_UNKNOWN;
    if (!eat_index(&p, &i) || (!down && i >= n)) return SF_UNKNOWN;
    const int a = down ? i : n - 1 - i; /* decoder up.i is up_blocks.(n-1-i) */
    if (eat(&p, "block.") && eat_index(&p, &j)) return map_vae_resnet(half, down ? "down_blocks" : "up_blocks", a, j, p,
                                                                      out, cap);
    if (eat(&p, down ? "downsample.conv." : "upsample.conv."))
        return fmt_name(out, cap, SF_SAME, "%s.%s.%d.%s.0.conv.%s", half, down ? "down_blocks" : "up_blocks", a,
                        down ? "downsamplers" : "upsamplers", p);
    return SF_UNKNOWN;
}

typedef struct sf_text_info {
    int openclip;        /* cond_stage_model.model.* (SD 2.x) */
    int width, vocab, positions, layers, mlp, heads;
} sf_text_info;

/* cond_stage_model.transformer.[text_model.]<rest>: transformers names already. */
static sf_how map_clip(const void *ctx, const char *rest, char *out, size_t cap) {
    (void)ctx;
    if (strcmp(rest, "embeddings.position_ids") == 0) return SF_DROP;
    const char *p = rest;
    if (eat(&p, "embeddings.") || eat(&p, "encoder.layers.") || eat(&p, "final_layer_norm."))
        return fmt_name(out, cap, SF_SAME, "%s", rest);
    return SF_UNKNOWN;
}

/* cond_stage_model.model.<rest> -> transformers CLIPTextModel name
 * (convert_open_clip_checkpoint); resblocks past the used layers drop. */
static sf_how map_openclip(const void *ctx, const char *rest, char *out, size_t cap) {
    static const char *const top[][2] = {{"token_embedding.weight", "embeddings.token_embedding.weight"},
                                         {"positional_embedding", "embeddings.position_embedding.weight"},
                                         {"ln_final.", "final_layer_norm."}};
    static const char *const layer[][2] = {{"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."},
                                           {"attn.out_proj.", "self_attn.out_proj."}, {"mlp.c_fc.", "mlp.fc1."},
                                           {"mlp.c_proj.", "mlp.fc2."}};
    const sf_text_info *t = ctx;
    if (strcmp(rest, "text_projection") == 0 || strcmp(rest, "logit_scale") == 0) return SF_DROP;
    if (map_table(top, sizeof top / sizeof top[0], rest, out, cap) == SF_SAME) return SF_SAME;
    const char *p = rest;
    int i;
    char leaf[SF_NAME];
    if (!eat(&p, "transformer.resblocks.") || !eat_index(&p, &i)) return SF_UNKNOWN;
    if (i >= t->layers) return SF_DROP;
    const int w = strcmp(p, "attn.in_proj_weight") == 0;
    if (w || strcmp(p, "attn.in_proj_bias") == 0)
        return fmt_name(out, cap, SF_QKV, "encoder.layers.%d.self_attn.q_proj.%s", i, w ? "weight" : "bias");
    if (map_table(layer, sizeof layer / sizeof layer[0], p, leaf, sizeof leaf) != SF_SAME) return SF_UNKNOWN;
    return fmt_name(out, cap, SF_SAME, "encoder.layers.%d.%s", i, leaf);
}

/* ---------------------------------------------------------------------- */
/* Building a view                                                        */
/* ---------------------------------------------------------------------- */

/* A 1x1 conv weight (C, C, 1[, 1]) as a linear (C, C). */
static diffuse_status add_linear(sf_vb *b, const sf_src *s, const char *name, const st_tensor *t, df_error *err) {
    int ok = t->ndim >= 2 && t->ndim <= 4;
    for (int d = 2; ok && d < t->ndim; d++) ok = t->shape[d] == 1;
    if (!ok) {
        char got[128];
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor \"%s\" has shape %s, expected [C, C, 1, 1] or [C, C]",
                       s->f->path, t->name, st_shape_str(t->shape, t->ndim, got, sizeof got));
    }
    return vb_add(b, name, t, 0, t->shape[0], 2, t->shape, err);
}

/* OpenCLIP's fused in_proj (3C, C) / (3C): rows of q, k, v. */
static diffuse_status add_qkv(sf_vb *b, const sf_src *s, const char *name, const st_tensor *t, int64_t c,
                              df_error *err) {
    if (t->ndim < 1 || t->ndim > 2 || t->shape[0] != 3 * c || (t->ndim == 2 && t->shape[1] != c)) {
        char got[128];
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor \"%s\" has shape %s, expected [%lld%s] (q, k, v of "
                       "width %lld)", s->f->path, t->name, st_shape_str(t->shape, t->ndim, got, sizeof got),
                       (long long)(3 * c), t->ndim == 2 ? ", C" : "", (long long)c);
    }
    char qkv[SF_NAME];
    df_strlcpy(qkv, name, sizeof qkv);
    char *at = strstr(qkv, ".q_proj.");
    const int64_t shape[2] = {c, c};
    if (!at) return df_fail(err, DIFFUSE_ERR_INTERNAL, "single-file view: %s is not a q_proj name", name);
    for (int r = 0; r < 3; r++) {
        at[1] = "qkv"[r];
        SF_TRY(vb_add(b, qkv, t, r * c, c, t->ndim, shape, err));
    }
    return DIFFUSE_OK;
}

/* Maps every tensor under s->prefix through @map into a virtual file. */
static diffuse_status build_view(const diffuse_model *m, const sf_src *s, sf_map_fn map, const void *ctx,
                                 int64_t qkv_width, st_file **out, df_error *err) {
    sf_vb b = {0};
    const size_t plen = strlen(s->prefix);
    size_t unknown = 0;
    const char *first_unknown = NULL;
    diffuse_status st = DIFFUSE_OK;
    for (size_t i = 0; st == DIFFUSE_OK && i < s->f->n_tensors; i++) {
        const st_tensor *t = &s->f->tensors[i];
        char name[SF_NAME];
        if (strncmp(t->name, s->prefix, plen) != 0) continue;
        switch (map(ctx, t->name + plen, name, sizeof name)) {
        case SF_SAME: st = vb_add(&b, name, t, 0, t->ndim ? t->shape[0] : 1, t->ndim, t->shape, err); break;
        case SF_LINEAR: st = add_linear(&b, s, name, t, err); break;
        case SF_QKV: st = add_qkv(&b, s, name, t, qkv_width, err); break;
        case SF_DROP: break;
        default:
            if (!unknown++) first_unknown = t->name;
            break;
        }
    }
    if (st != DIFFUSE_OK) {
        vb_free(&b);
        return st;
    }
    if (unknown)
        df_log(&m->log, DIFFUSE_LOG_WARN, "%s: %zu %s* tensor(s) outside the original %s layout ignored (first: %s)",
               s->f->path, unknown, s->prefix, s->what, first_unknown);
    return vb_finish(&b, s, out, err);
}

/* ---------------------------------------------------------------------- */
/* UNet configuration from shapes                                         */
/* ---------------------------------------------------------------------- */

/* Dimension @axis of @t as an int in [1, 2^20]. */
static diffuse_status sf_dim(const sf_src *s, const st_tensor *t, int axis, int *out, df_error *err) {
    const int64_t v = axis < t->ndim ? t->shape[axis] : 0;
    if (v < 1 || v > (1 << 20)) {
        char got[128];
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor \"%s\" has shape %s; dimension %d must be 1..%d",
                       s->f->path, t->name, st_shape_str(t->shape, t->ndim, got, sizeof got), axis, 1 << 20);
    }
    *out = (int)v;
    return DIFFUSE_OK;
}

/* The transformer at @base (of a block at @level): its depth, projection
 * kind and cross-attention width, consistent with the others. */
static diffuse_status unet_attention(const sf_src *s, sf_unet_info *u, int level, const char *base, df_error *err) {
    const st_tensor *pin, *k;
    int depth = 0, cross;
    while (depth < SF_MAX_BLOCKS && sf_has(s, "%stransformer_blocks.%d.", base, depth)) depth++;
    SF_TRY(sf_need(s, err, -1, &pin, "%sproj_in.weight", base));
    SF_TRY(sf_need(s, err, 2, &k, "%stransformer_blocks.0.attn2.to_k.weight", base));
    SF_TRY(sf_dim(s, k, 1, &cross, err));
    const int linear = pin->ndim == 2;
    if (!linear && pin->ndim != 4) {
        char got[128];
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor \"%s\" has shape %s, expected [C, C] (SD 2.x) or "
                       "[C, C, 1, 1] (SD 1.x)", s->f->path, pin->name, st_shape_str(pin->shape, pin->ndim, got,
                                                                                     sizeof got));
    }
    if (u->linear >= 0 && u->linear != linear)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file UNet mixes 1x1-conv and linear transformer "
                       "projections (%s)", s->f->path, pin->name);
    if (u->cross_dim && cross != u->cross_dim) return sf_shape_fail(s, k, u->cross_dim, 1, "the cross-attention "
                                                                    "width of the other attentions", err);
    if (u->depth[level] && u->depth[level] != depth)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file UNet: %s%s has %d transformer blocks, another "
                       "attention of its level %d", s->f->path, s->prefix, base, depth, u->depth[level]);
    u->linear = linear;
    u->cross_dim = cross;
    u->depth[level] = depth;
    return DIFFUSE_OK;
}

/* input_blocks.1..: resnets (with or without attention) per level, a
 * downsampler (.0.op) between levels. Sets levels, layers, ch, down_attn. */
static diffuse_status unet_down(const sf_src *s, sf_unet_info *u, df_error *err) {
    int level = 0, nres = 0, count[UNET_MAX_LEVELS] = {0};
    char base[64];
    for (int i = 1; i < SF_MAX_BLOCKS && sf_has(s, "input_blocks.%d.", i); i++) {
        const st_tensor *t;
        if (sf_find(s, "input_blocks.%d.0.op.weight", i)) {
            count[level] = nres;
            nres = 0;
            if (++level == UNET_MAX_LEVELS)
                return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file UNet has more than %d levels",
                               s->f->path, UNET_MAX_LEVELS);
            continue;
        }
        int ch, attn = sf_has(s, "input_blocks.%d.1.", i);
        SF_TRY(sf_need(s, err, 4, &t, "input_blocks.%d.0.out_layers.3.weight", i));
        SF_TRY(sf_dim(s, t, 0, &ch, err));
        if (nres && ch != u->ch[level]) return sf_shape_fail(s, t, u->ch[level], 0, "the level's channels", err);
        if (nres && attn != u->down_attn[level])
            return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file UNet: input_blocks.%d %s attention unlike "
                           "the other blocks of its level", s->f->path, i, attn ? "has" : "lacks");
        u->ch[level] = ch;
        u->down_attn[level] = attn;
        snprintf(base, sizeof base, "input_blocks.%d.1.", i);
        if (attn) SF_TRY(unet_attention(s, u, level, base, err));
        nres++;
    }
    count[level] = nres;
    u->levels = level + 1;
    u->layers = count[0];
    for (int l = 0; l < u->levels; l++)
        if (count[l] != u->layers || count[l] == 0)
            return df_fail(err, count[l] ? DIFFUSE_ERR_UNSUPPORTED : DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                           "%s: single-file UNet: level %d has %d resnets, level 0 has %d (layers per block must be "
                           "equal and positive)", s->f->path, l, count[l], u->layers);
    return DIFFUSE_OK;
}

/* output_blocks (levels * (layers + 1) of them) and the middle block's
 * attention. Sets up_attn. */
static diffuse_status unet_up_mid(const sf_src *s, sf_unet_info *u, df_error *err) {
    const int l1 = u->layers + 1, n = sf_count(s, "output_blocks.%d.");
    char base[64];
    if (n != u->levels * l1)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: single-file UNet has %d output_blocks; %d levels of %d "
                       "resnets need %d", s->f->path, n, u->levels, u->layers, u->levels * l1);
    for (int b = 0; b < u->levels; b++) {
        snprintf(base, sizeof base, "output_blocks.%d.1.", b * l1);
        u->up_attn[b] = sf_find(s, "%sproj_in.weight", base) != NULL;
        if (u->up_attn[b]) SF_TRY(unet_attention(s, u, u->levels - 1 - b, base, err));
    }
    return unet_attention(s, u, u->levels - 1, "middle_block.1.", err);
}

/* Heads per level: 8 (SD 1.x, conv projections) or width / 64 (SD 2.x);
 * levels without attention get a harmless value. */
static diffuse_status unet_heads(const sf_src *s, sf_unet_info *u, df_error *err) {
    for (int l = 0; l < u->levels; l++) {
        const int used = u->down_attn[l] || u->up_attn[u->levels - 1 - l] || l == u->levels - 1;
        const int c = u->ch[l], div = u->linear ? SF_HEAD_DIM : SF_SD1_HEADS;
        if (c % SF_GROUPS)
            return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file UNet level %d has %d channels, not a "
                           "multiple of the %d GroupNorm groups of SD checkpoints", s->f->path, l, c, SF_GROUPS);
        if (used && c % div)
            return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file UNet level %d has %d channels, not a "
                           "multiple of %d: its attention heads cannot be inferred (%s)", s->f->path, l, c, div,
                           u->linear ? "SD 2.x uses head dim 64" : "SD 1.x uses 8 heads");
        u->heads[l] = u->linear ? (c / SF_HEAD_DIM > 0 ? c / SF_HEAD_DIM : 1) : SF_SD1_HEADS;
        if (!u->depth[l]) u->depth[l] = 1;
    }
    return DIFFUSE_OK;
}

/* Everything the UNet's config needs, from its tensors' shapes. */
static diffuse_status unet_infer(const sf_src *s, sf_unet_info *u, df_error *err) {
    const st_tensor *cin, *cout, *temb;
    int temb_in;
    memset(u, 0, sizeof *u);
    u->linear = -1;
    if (sf_has(s, "label_emb."))
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file UNet has class embeddings (%slabel_emb.*: an "
                       "upscaler or unCLIP model); only text-conditioned SD 1.x/2.x UNets are supported", s->f->path,
                       s->prefix);
    SF_TRY(sf_need(s, err, 4, &cin, "input_blocks.0.0.weight"));
    SF_TRY(sf_need(s, err, 4, &cout, "out.2.weight"));
    SF_TRY(sf_need(s, err, 2, &temb, "time_embed.0.weight"));
    SF_TRY(sf_dim(s, cin, 0, &u->c0, err));
    SF_TRY(sf_dim(s, cin, 1, &u->cin, err));
    SF_TRY(sf_dim(s, cin, 2, &u->k_in, err));
    SF_TRY(sf_dim(s, cout, 0, &u->cout, err));
    SF_TRY(sf_dim(s, cout, 2, &u->k_out, err));
    SF_TRY(sf_dim(s, temb, 0, &u->temb, err));
    SF_TRY(sf_dim(s, temb, 1, &temb_in, err));
    if (temb_in != u->c0) return sf_shape_fail(s, temb, u->c0, 1, "conv_in's output channels", err);
    SF_TRY(unet_down(s, u, err));
    if (u->ch[0] != u->c0)
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: single-file UNet: first level has %d channels, conv_in "
                       "gives %d", s->f->path, u->ch[0], u->c0);
    SF_TRY(unet_up_mid(s, u, err));
    return unet_heads(s, u, err);
}

static diffuse_status unet_make_config(const sf_unet_info *u, int sample_size, struct json_object **out,
                                       df_error *err) {
    sf_json j = {json_object_new_object(), 0};
    if (!j.o) return js_finish(&j, out, "UNet", err);
    js_str(&j, "_class_name", "UNet2DConditionModel");
    js_str(&j, "act_fn", "silu");
    js_int_list(&j, "attention_head_dim", u->heads, u->levels);
    js_int_list(&j, "block_out_channels", u->ch, u->levels);
    js_int(&j, "conv_in_kernel", u->k_in);
    js_int(&j, "conv_out_kernel", u->k_out);
    js_int(&j, "cross_attention_dim", u->cross_dim);
    js_str_list(&j, "down_block_types", u->down_attn, u->levels, "CrossAttnDownBlock2D", "DownBlock2D");
    js_int(&j, "downsample_padding", 1);
    js_bool(&j, "flip_sin_to_cos", 1);
    js_int(&j, "freq_shift", 0);
    js_int(&j, "in_channels", u->cin);
    js_int(&j, "layers_per_block", u->layers);
    js_str(&j, "mid_block_type", "UNetMidBlock2DCrossAttn");
    js_double(&j, "norm_eps", 1e-5);
    js_int(&j, "norm_num_groups", SF_GROUPS);
    js_int(&j, "out_channels", u->cout);
    js_int(&j, "sample_size", sample_size);
    if (u->temb != 4 * u->c0) js_int(&j, "time_embedding_dim", u->temb);
    js_int_list(&j, "transformer_layers_per_block", u->depth, u->levels);
    js_str_list(&j, "up_block_types", u->up_attn, u->levels, "CrossAttnUpBlock2D", "UpBlock2D");
    js_bool(&j, "upcast_attention", u->linear);
    js_bool(&j, "use_linear_projection", u->linear);
    return js_finish(&j, out, "UNet", err);
}

/* ---------------------------------------------------------------------- */
/* VAE and text encoder configurations                                    */
/* ---------------------------------------------------------------------- */

static diffuse_status vae_infer(const sf_src *s, sf_vae_info *v, df_error *err) {
    const st_tensor *t;
    int c0;
    memset(v, 0, sizeof *v);
    v->levels = sf_count(s, "encoder.down.%d.");
    v->layers = sf_count(s, "encoder.down.0.block.%d.");
    if (v->levels == 0 || v->layers == 0) { /* the first resnet is missing: say so by name */
        SF_TRY(sf_need(s, err, 4, &t, "encoder.down.0.block.0.conv1.weight"));
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: single-file VAE: no encoder.down.* blocks", s->f->path);
    }
    if (v->levels > VAE_MAX_LEVELS)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file VAE has %d levels, at most %d", s->f->path,
                       v->levels, VAE_MAX_LEVELS);
    if (sf_count(s, "decoder.up.%d.") != v->levels)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "%s: single-file VAE: %d encoder levels (%sencoder.down.*) but "
                       "%d decoder levels (decoder.up.*)", s->f->path, v->levels, s->prefix,
                       sf_count(s, "decoder.up.%d."));
    for (int i = 0; i < v->levels; i++) {
        SF_TRY(sf_need(s, err, 4, &t, "encoder.down.%d.block.0.conv1.weight", i));
        SF_TRY(sf_dim(s, t, 0, &v->ch[i], err));
        if (v->ch[i] % SF_GROUPS)
            return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file VAE level %d has %d channels, not a "
                           "multiple of the %d GroupNorm groups of SD checkpoints", s->f->path, i, v->ch[i], SF_GROUPS);
    }
    SF_TRY(sf_need(s, err, 4, &t, "encoder.conv_in.weight"));
    SF_TRY(sf_dim(s, t, 1, &v->cin, err));
    SF_TRY(sf_dim(s, t, 0, &c0, err));
    if (c0 != v->ch[0]) return sf_shape_fail(s, t, v->ch[0], 0, "the first level's channels", err);
    SF_TRY(sf_need(s, err, 4, &t, "decoder.conv_out.weight"));
    SF_TRY(sf_dim(s, t, 0, &v->cout, err));
    SF_TRY(sf_need(s, err, 4, &t, "decoder.conv_in.weight"));
    SF_TRY(sf_dim(s, t, 1, &v->latent, err));
    v->mid_attn = sf_has(s, "encoder.mid.attn_1.");
    v->quant = sf_has(s, "quant_conv.");
    v->post_quant = sf_has(s, "post_quant_conv.");
    return DIFFUSE_OK;
}

static diffuse_status vae_make_config(const sf_vae_info *v, int image_size, struct json_object **out, df_error *err) {
    sf_json j = {json_object_new_object(), 0};
    if (!j.o) return js_finish(&j, out, "VAE", err);
    js_str(&j, "_class_name", "AutoencoderKL");
    js_str(&j, "act_fn", "silu");
    js_int_list(&j, "block_out_channels", v->ch, v->levels);
    js_str_list(&j, "down_block_types", NULL, v->levels, "DownEncoderBlock2D", NULL);
    js_bool(&j, "force_upcast", 1);
    js_int(&j, "in_channels", v->cin);
    js_int(&j, "latent_channels", v->latent);
    js_int(&j, "layers_per_block", v->layers);
    js_bool(&j, "mid_block_add_attention", v->mid_attn);
    js_int(&j, "norm_num_groups", SF_GROUPS);
    js_int(&j, "out_channels", v->cout);
    js_int(&j, "sample_size", image_size);
    js_double(&j, "scaling_factor", 0.18215);
    js_str_list(&j, "up_block_types", NULL, v->levels, "UpDecoderBlock2D", NULL);
    js_bool(&j, "use_post_quant_conv", v->post_quant);
    js_bool(&j, "use_quant_conv", v->quant);
    return js_finish(&j, out, "VAE", err);
}

/* CLIP (transformers names) or OpenCLIP (token_embedding, resblocks). */
static diffuse_status text_infer(const sf_src *s, int openclip, sf_text_info *t, df_error *err) {
    const st_tensor *tok, *pos, *fc1;
    int pos_width;
    memset(t, 0, sizeof *t);
    t->openclip = openclip;
    SF_TRY(sf_need(s, err, 2, &tok, openclip ? "token_embedding.weight" : "embeddings.token_embedding.weight"));
    SF_TRY(sf_need(s, err, 2, &pos, openclip ? "positional_embedding" : "embeddings.position_embedding.weight"));
    SF_TRY(sf_need(s, err, 2, &fc1, openclip ? "transformer.resblocks.0.mlp.c_fc.weight"
                                             : "encoder.layers.0.mlp.fc1.weight"));
    SF_TRY(sf_dim(s, tok, 0, &t->vocab, err));
    SF_TRY(sf_dim(s, tok, 1, &t->width, err));
    SF_TRY(sf_dim(s, pos, 0, &t->positions, err));
    SF_TRY(sf_dim(s, pos, 1, &pos_width, err));
    SF_TRY(sf_dim(s, fc1, 0, &t->mlp, err));
    if (pos_width != t->width) return sf_shape_fail(s, pos, t->width, 1, "the token embedding's width", err);
    /* SD 2.x conditions on OpenCLIP's penultimate layer: the last resblock
     * drops (ViT-H: 24 -> 23); a file with 23 had it pruned already. */
    const int blocks = sf_count(s, "transformer.resblocks.%d.");
    t->layers = openclip ? (blocks == 23 ? 23 : blocks - 1) : sf_count(s, "encoder.layers.%d.");
    if (t->layers < 1)
        return df_fail(err, DIFFUSE_ERR_MODEL_MISSING_TENSOR, "%s: single-file text encoder: too few layers under "
                       "%s%s", s->f->path, s->prefix, openclip ? "transformer.resblocks.* (need 2 or more)"
                                                               : "encoder.layers.*");
    if (t->width % SF_HEAD_DIM)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: single-file text encoder width %d is not a multiple of %d: "
                       "its attention heads cannot be inferred (CLIP and OpenCLIP use head dim %d)", s->f->path,
                       t->width, SF_HEAD_DIM, SF_HEAD_DIM);
    t->heads = t->width / SF_HEAD_DIM;
    return DIFFUSE_OK;
}

static diffuse_status text_make_config(const sf_text_info *t, struct json_object **out, df_error *err) {
    sf_json j = {json_object_new_object(), 0};
    if (!j.o) return js_finish(&j, out, "text encoder", err);
    struct json_object *arch = json_object_new_array();
    if (arch && json_object_array_add(arch, json_object_new_string("CLIPTextModel")) != 0) j.bad = 1;
    js_put(&j, "architectures", arch);
    js_int(&j, "bos_token_id", 49406);
    js_int(&j, "eos_token_id", 49407);
    js_str(&j, "hidden_act", t->openclip ? "gelu" : "quick_gelu");
    js_int(&j, "hidden_size", t->width);
    js_int(&j, "intermediate_size", t->mlp);
    js_double(&j, "layer_norm_eps", 1e-5);
    js_int(&j, "max_position_embeddings", t->positions);
    js_str(&j, "model_type", "clip_text_model");
    js_int(&j, "num_attention_heads", t->heads);
    js_int(&j, "num_hidden_layers", t->layers);
    js_int(&j, "vocab_size", t->vocab);
    return js_finish(&j, out, "text encoder", err);
}

/* ---------------------------------------------------------------------- */
/* Prediction type, scheduler, the whole model                            */
/* ---------------------------------------------------------------------- */

/* An integer scalar "global_step" (kept by some conversions of .ckpt files). */
static int64_t global_step(const st_file *f) {
    const st_tensor *t = st_find(f, "global_step");
    if (!t || t->numel != 1 || (t->dtype != ST_I64 && t->dtype != ST_I32)) return -1;
    if (t->dtype == ST_I32) {
        int32_t v;
        memcpy(&v, t->data, sizeof v);
        return v;
    }
    int64_t v;
    memcpy(&v, t->data, sizeof v);
    return v;
}

/* The rule of single_file.h: v-prediction and the native image size. */
static void pick_prediction(const diffuse_model *m, const sf_unet_info *u, df_prediction pred, int *v, int *size) {
    const int sd2 = m->family == DIFFUSE_FAMILY_SD2;
    if (pred == DF_PRED_AUTO)
        pred = sd2 && u->cin == 4 && global_step(m->comp[DF_COMP_UNET].weights) != 875000 ? DF_PRED_V
                                                                                         : DF_PRED_EPSILON;
    *v = pred == DF_PRED_V;
    *size = sd2 && *v ? 768 : 512;
}

/* SD 1.5's scheduler config (PNDM) or SD 2.1's (DDIM), with the prediction type. */
static diffuse_status sched_make_config(int sd2, int v, struct json_object **out, df_error *err) {
    static const char sd1[] =
        "{\"_class_name\": \"PNDMScheduler\", \"beta_end\": 0.012, \"beta_schedule\": \"scaled_linear\", "
        "\"beta_start\": 0.00085, \"clip_sample\": false, \"num_train_timesteps\": 1000, \"set_alpha_to_one\": false, "
        "\"skip_prk_steps\": true, \"steps_offset\": 1, \"timestep_spacing\": \"leading\", \"trained_betas\": null}";
    static const char sd2_[] =
        "{\"_class_name\": \"DDIMScheduler\", \"beta_end\": 0.012, \"beta_schedule\": \"scaled_linear\", "
        "\"beta_start\": 0.00085, \"clip_sample\": false, \"num_train_timesteps\": 1000, \"set_alpha_to_one\": false, "
        "\"skip_prk_steps\": true, \"steps_offset\": 1, \"trained_betas\": null}";
    sf_json j = {json_tokener_parse(sd2 ? sd2_ : sd1), 0};
    if (j.o) js_str(&j, "prediction_type", v ? "v_prediction" : "epsilon");
    return js_finish(&j, out, "scheduler", err);
}

static void fill_dims(diffuse_model *m, const sf_unet_info *u, const sf_vae_info *v, const sf_text_info *t, int vpred,
                      int sample_size) {
    df_model_dims *d = &m->dims;
    d->unet_in_channels = u->cin;
    d->unet_out_channels = u->cout;
    d->unet_sample_size = sample_size;
    d->cross_attention_dim = u->cross_dim;
    d->vae_in_channels = v->cin;
    d->latent_channels = v->latent;
    d->vae_scale_factor = (int64_t)1 << (v->levels - 1);
    d->text_hidden_size = t->width;
    d->text_layers = t->layers;
    d->text_vocab_size = t->vocab;
    d->text_max_positions = t->positions;
    d->v_prediction = vpred;
}

/* The three views, and parameter counts over them. */
static diffuse_status build_views(diffuse_model *m, const sf_src src[DF_COMP_COUNT], const sf_unet_info *u,
                                  const sf_vae_info *v, const sf_text_info *t, df_error *err) {
    SF_TRY(build_view(m, &src[DF_COMP_UNET], map_unet, u, 0, &m->sf_view[DF_COMP_UNET], err));
    SF_TRY(build_view(m, &src[DF_COMP_VAE], map_vae, v, 0, &m->sf_view[DF_COMP_VAE], err));
    SF_TRY(build_view(m, &src[DF_COMP_TEXT_ENCODER], t->openclip ? map_openclip : map_clip, t, t->width,
                      &m->sf_view[DF_COMP_TEXT_ENCODER], err));
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        const st_file *view = m->sf_view[c];
        m->comp[c].n_params = 0;
        for (size_t i = 0; i < view->n_tensors; i++)
            if (st_dtype_is_weight(view->tensors[i].dtype)) m->comp[c].n_params += view->tensors[i].numel;
    }
    return DIFFUSE_OK;
}

diffuse_status df_single_file_map(diffuse_model *m, df_prediction pred, df_error *err) {
    const st_file *f = m->comp[DF_COMP_UNET].weights;
    const sf_src src[DF_COMP_COUNT] = {{f, m->comp[DF_COMP_UNET].key_prefix, "UNet"},
                                       {f, m->comp[DF_COMP_VAE].key_prefix, "VAE"},
                                       {f, m->comp[DF_COMP_TEXT_ENCODER].key_prefix, "text encoder"}};
    if (!sf_has(&src[DF_COMP_UNET], "input_blocks.")) {
        df_log(&m->log, DIFFUSE_LOG_WARN, "%s: no model.diffusion_model.input_blocks.* tensors: not the original "
               "checkpoint layout, so the model is recognised but cannot run", f->path);
        return DIFFUSE_OK;
    }
    sf_unet_info u;
    sf_vae_info v;
    sf_text_info t;
    int vpred, image_size;
    SF_TRY(unet_infer(&src[DF_COMP_UNET], &u, err));
    SF_TRY(vae_infer(&src[DF_COMP_VAE], &v, err));
    SF_TRY(text_infer(&src[DF_COMP_TEXT_ENCODER], m->family == DIFFUSE_FAMILY_SD2, &t, err));
    if (u.cross_dim != t.width)
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: the UNet cross-attends to width %d (attn2.to_k), the text "
                       "encoder gives width %d", f->path, u.cross_dim, t.width);
    pick_prediction(m, &u, pred, &vpred, &image_size);
    const int sample_size = image_size >> (v.levels - 1);
    SF_TRY(unet_make_config(&u, sample_size, &m->sf_config[DF_COMP_UNET], err));
    SF_TRY(vae_make_config(&v, image_size, &m->sf_config[DF_COMP_VAE], err));
    SF_TRY(text_make_config(&t, &m->sf_config[DF_COMP_TEXT_ENCODER], err));
    SF_TRY(sched_make_config(m->family == DIFFUSE_FAMILY_SD2, vpred, &m->scheduler_config, err));
    SF_TRY(build_views(m, src, &u, &v, &t, err));
    fill_dims(m, &u, &v, &t, vpred, sample_size);
    df_log(&m->log, DIFFUSE_LOG_INFO, "%s: single file mapped to diffusers names: %s, %d-channel UNet, %d text "
           "layers, %s, %d px", f->path, m->family == DIFFUSE_FAMILY_SD2 ? "SD2 (OpenCLIP)" : "SD1 (CLIP)", u.cin,
           t.layers, vpred ? "v-prediction" : "epsilon", image_size);
    return DIFFUSE_OK;
}

void df_single_file_free(diffuse_model *m) {
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        st_close(m->sf_view[c]);
        json_object_put(m->sf_config[c]);
        m->sf_view[c] = NULL;
        m->sf_config[c] = NULL;
    }
}
