/*
 * vae.c - AutoencoderKL on the backend ops: config reading, weight lookup by
 * diffusers names, the encoder (conv_in, DownEncoderBlock2Ds, mid block,
 * GN+SiLU, conv_out, quant_conv), the posterior sample, and the decoder
 * (post_quant_conv, conv_in, mid block, UpDecoderBlock2Ds, GN+SiLU, conv_out).
 * vae_workspace_bytes walks the same passes in planning mode.
 *
 * Arena layout of a pass (bottom to top): two ping-pong feature maps, each as
 * large as the largest map of the pass; the temporaries of the block running,
 * released when it returns. Tiled passes add two tile buffers below that
 * and blend the tiles on the host.
 */
#include "nets/vae.h"

#include "model/json_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every GroupNorm of the VAE (resnets, attention, conv_norm_out). */
#define VAE_EPS 1e-6f
/* Largest image side accepted: keeps H*W and every op's int sizes in range. */
#define VAE_MAX_SIDE 32768

static const char cfg_file[] = "vae/config.json";

/* ------------------------------------------------------------------------ */
/* Config                                                                    */
/* ------------------------------------------------------------------------ */

/* @key, when present, is a list of @levels strings all equal to @want. */
static diffuse_status cfg_block_types(const struct json_object *j, const char *key, int levels, const char *want,
                                      df_error *err) {
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(j, key, &v) || !v) return DIFFUSE_OK; /* diffusers' default type */
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) != (size_t)levels)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" must list %d block types (one per entry of "
                       "block_out_channels), found %s", cfg_file, key, levels, dfj_value_text(j, key));
    for (int i = 0; i < levels; i++) {
        struct json_object *e = json_object_array_get_idx(v, (size_t)i);
        if (!json_object_is_type(e, json_type_string) || strcmp(json_object_get_string(e), want) != 0)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" is %s; this VAE supports only \"%s\"",
                           cfg_file, key, dfj_value_text(j, key), want);
    }
    return DIFFUSE_OK;
}

/* block_out_channels (default [64]), the block types, norm_num_groups. */
static diffuse_status cfg_levels(const struct json_object *j, vae_config *c, df_error *err) {
    struct json_object *v = NULL;
    c->levels = 1;
    c->block_out[0] = 64;
    if (json_object_object_get_ex(j, "block_out_channels", &v) && v) {
        size_t n = 0;
        int64_t ch;
        NN_TRY(dfj_get_int_elem(j, "block_out_channels", 0, cfg_file, 1, 1 << 16, &ch, &n, err));
        if (n > VAE_MAX_LEVELS)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"block_out_channels\" has %zu entries, at most %d",
                           cfg_file, n, VAE_MAX_LEVELS);
        c->levels = (int)n;
        for (int i = 0; i < c->levels; i++) {
            NN_TRY(dfj_get_int_elem(j, "block_out_channels", (size_t)i, cfg_file, 1, 1 << 16, &ch, NULL, err));
            c->block_out[i] = (int)ch;
        }
    }
    NN_TRY(cfg_block_types(j, "down_block_types", c->levels, "DownEncoderBlock2D", err));
    NN_TRY(cfg_block_types(j, "up_block_types", c->levels, "UpDecoderBlock2D", err));
    int64_t g;
    NN_TRY(dfj_get_int_opt(j, "norm_num_groups", 32, cfg_file, 1, 1 << 16, &g, err));
    c->groups = (int)g;
    for (int i = 0; i < c->levels; i++)
        if (c->block_out[i] % c->groups)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                           "%s: norm_num_groups %d does not divide block_out_channels[%d] = %d", cfg_file, c->groups,
                           i, c->block_out[i]);
    c->scale = 1 << (c->levels - 1);
    return DIFFUSE_OK;
}

/* sample_size: an int or a [height, width] list (the first entry counts, as
 * diffusers' tile_latent_min_size takes it). Default 32. */
static diffuse_status cfg_sample_size(const struct json_object *j, vae_config *c, df_error *err) {
    struct json_object *v = NULL;
    int64_t s = 32;
    if (json_object_object_get_ex(j, "sample_size", &v) && v) {
        if (json_object_is_type(v, json_type_array))
            NN_TRY(dfj_get_int_elem(j, "sample_size", 0, cfg_file, 1, VAE_MAX_SIDE, &s, NULL, err));
        else
            NN_TRY(dfj_get_int(j, "sample_size", cfg_file, 1, VAE_MAX_SIDE, &s, err));
    }
    c->sample_size = (int)s;
    return DIFFUSE_OK;
}

diffuse_status vae_read_config(const struct json_object *j, vae_config *c, df_error *err) {
    *c = (vae_config){0};
    if (!j || !json_object_is_type(j, json_type_object))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: not a JSON object", cfg_file);
    int64_t v[4];
    static const char *const keys[4] = {"in_channels", "out_channels", "latent_channels", "layers_per_block"};
    static const int64_t fallback[4] = {3, 3, 4, 1}, max[4] = {1 << 16, 1 << 16, 1 << 16, 64};
    for (int i = 0; i < 4; i++) NN_TRY(dfj_get_int_opt(j, keys[i], fallback[i], cfg_file, 1, max[i], &v[i], err));
    c->in_channels = (int)v[0];
    c->out_channels = (int)v[1];
    c->latent_channels = (int)v[2];
    c->layers = (int)v[3];
    NN_TRY(cfg_levels(j, c, err));
    struct json_object *act = NULL;
    if (json_object_object_get_ex(j, "act_fn", &act) && act &&
        (!json_object_is_type(act, json_type_string) || strcmp(json_object_get_string(act), "silu") != 0))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"act_fn\" is %s; this VAE supports only \"silu\"",
                       cfg_file, dfj_value_text(j, "act_fn"));
    NN_TRY(dfj_get_bool_opt(j, "mid_block_add_attention", 1, cfg_file, &c->mid_attention, err));
    NN_TRY(dfj_get_bool_opt(j, "use_quant_conv", 1, cfg_file, &c->quant_conv, err));
    NN_TRY(dfj_get_bool_opt(j, "use_post_quant_conv", 1, cfg_file, &c->post_quant_conv, err));
    double scaling, shift;
    NN_TRY(dfj_get_number_opt(j, "scaling_factor", 0.18215, cfg_file, &scaling, err));
    NN_TRY(dfj_get_number_opt(j, "shift_factor", 0.0, cfg_file, &shift, err));
    if (!(scaling > 0.0))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"scaling_factor\" is %s; it must be positive", cfg_file,
                       dfj_value_text(j, "scaling_factor"));
    c->scaling_factor = (float)scaling;
    c->shift_factor = (float)shift;
    return cfg_sample_size(j, c, err);
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

/* The mid block's attention: "<base>group_norm", "<base>to_q" ..., or the
 * names diffusers < 0.14 wrote ("<base>query", "key", "value", "proj_attn"). */
static diffuse_status vae_load_attention(const nn_source *s, const char *base, int ch, vae_mid_block *mb,
                                         df_error *err) {
    static const char *const names[2][4] = {{"to_q", "to_k", "to_v", "to_out.0"},
                                            {"query", "key", "value", "proj_attn"}};
    char name[320];
    snprintf(name, sizeof name, "%s%squery.weight", s->prefix ? s->prefix : "", base);
    const int old = st_find(s->file, name) != NULL;
    nn_linear *dst[4] = {&mb->q, &mb->k, &mb->v, &mb->out};
    snprintf(name, sizeof name, "%sgroup_norm", base);
    NN_TRY(nn_norm_load(s, name, ch, &mb->attn_norm, err));
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s%s", base, names[old][i]);
        NN_TRY(nn_linear_load(s, name, ch, ch, 1, 0, dst[i], err));
    }
    return DIFFUSE_OK;
}

/* UNetMidBlock2D "<half>.mid_block.": resnets.0, attentions.0, resnets.1. */
static diffuse_status vae_load_mid(const nn_source *s, const char *half, const vae_config *c, vae_mid_block *mb,
                                   df_error *err) {
    const int ch = c->block_out[c->levels - 1];
    char base[128];
    for (int i = 0; i < 2; i++) {
        snprintf(base, sizeof base, "%s.mid_block.resnets.%d.", half, i);
        NN_TRY(resnet_block_load(s, base, ch, ch, 0, c->groups, VAE_EPS, 1.0f, &mb->res[i], err));
    }
    mb->has_attn = c->mid_attention;
    mb->groups = c->groups;
    if (!mb->has_attn) return DIFFUSE_OK;
    snprintf(base, sizeof base, "%s.mid_block.attentions.0.", half);
    return vae_load_attention(s, base, ch, mb, err);
}

/* encoder.* and quant_conv; @slab receives the down blocks' resnets. */
static diffuse_status vae_load_encoder(const nn_source *s, vae_model *m, resnet_block *slab, df_error *err) {
    const vae_config *c = &m->cfg;
    const int c_last = c->block_out[c->levels - 1], L = c->latent_channels;
    NN_TRY(nn_conv_load(s, "encoder.conv_in", c->block_out[0], c->in_channels, 3, 1, &m->enc_conv_in, err));
    int c_in = c->block_out[0];
    char base[128];
    for (int i = 0; i < c->levels; i++) {
        vae_down_block *d = &m->down[i];
        const int c_out = c->block_out[i];
        d->res = slab + (size_t)i * c->layers;
        for (int j = 0; j < c->layers; j++) {
            snprintf(base, sizeof base, "encoder.down_blocks.%d.resnets.%d.", i, j);
            NN_TRY(resnet_block_load(s, base, j ? c_out : c_in, c_out, 0, c->groups, VAE_EPS, 1.0f, &d->res[j], err));
        }
        d->has_down = i < c->levels - 1;
        if (d->has_down) {
            snprintf(base, sizeof base, "encoder.down_blocks.%d.downsamplers.0.", i);
            NN_TRY(downsample2d_load(s, base, c_out, 0, &d->down, err));
        }
        c_in = c_out;
    }
    NN_TRY(vae_load_mid(s, "encoder", c, &m->enc_mid, err));
    NN_TRY(nn_norm_load(s, "encoder.conv_norm_out", c_last, &m->enc_norm_out, err));
    NN_TRY(nn_conv_load(s, "encoder.conv_out", 2 * L, c_last, 3, 1, &m->enc_conv_out, err));
    if (c->quant_conv) NN_TRY(nn_conv_load(s, "quant_conv", 2 * L, 2 * L, 1, 1, &m->quant_conv, err));
    return DIFFUSE_OK;
}

/* post_quant_conv and decoder.*; up block i runs at level levels-1-i. */
static diffuse_status vae_load_decoder(const nn_source *s, vae_model *m, resnet_block *slab, df_error *err) {
    const vae_config *c = &m->cfg;
    const int c_last = c->block_out[c->levels - 1], L = c->latent_channels;
    if (c->post_quant_conv) NN_TRY(nn_conv_load(s, "post_quant_conv", L, L, 1, 1, &m->post_quant_conv, err));
    NN_TRY(nn_conv_load(s, "decoder.conv_in", c_last, L, 3, 1, &m->dec_conv_in, err));
    NN_TRY(vae_load_mid(s, "decoder", c, &m->dec_mid, err));
    int c_in = c_last;
    char base[128];
    for (int i = 0; i < c->levels; i++) {
        vae_up_block *u = &m->up[i];
        const int c_out = c->block_out[c->levels - 1 - i];
        u->res = slab + (size_t)i * (c->layers + 1);
        for (int j = 0; j < c->layers + 1; j++) {
            snprintf(base, sizeof base, "decoder.up_blocks.%d.resnets.%d.", i, j);
            NN_TRY(resnet_block_load(s, base, j ? c_out : c_in, c_out, 0, c->groups, VAE_EPS, 1.0f, &u->res[j], err));
        }
        u->has_up = i < c->levels - 1;
        if (u->has_up) {
            snprintf(base, sizeof base, "decoder.up_blocks.%d.upsamplers.0.", i);
            NN_TRY(upsample2d_load(s, base, c_out, &u->up, err));
        }
        c_in = c_out;
    }
    NN_TRY(nn_norm_load(s, "decoder.conv_norm_out", c->block_out[0], &m->dec_norm_out, err));
    return nn_conv_load(s, "decoder.conv_out", c->out_channels, c->block_out[0], 3, 1, &m->dec_conv_out, err);
}

diffuse_status vae_load(const st_file *f, const char *prefix, const struct json_object *config, vae_model **out,
                        df_error *err) {
    if (!out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_load: NULL output");
    *out = NULL;
    if (!f || !config) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_load: no weights or config");
    vae_model *m = calloc(1, sizeof *m);
    if (!m) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "vae_load: out of memory");
    diffuse_status st = vae_read_config(config, &m->cfg, err);
    const size_t enc_res = (size_t)m->cfg.levels * m->cfg.layers;
    if (st == DIFFUSE_OK && !(m->res_slab = calloc(enc_res + (size_t)m->cfg.levels * (m->cfg.layers + 1),
                                                   sizeof *m->res_slab)))
        st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "vae_load: out of memory");
    const nn_source src = {f, prefix ? prefix : "", "vae"};
    if (st == DIFFUSE_OK) st = vae_load_encoder(&src, m, m->res_slab, err);
    if (st == DIFFUSE_OK) st = vae_load_decoder(&src, m, m->res_slab + enc_res, err);
    if (st != DIFFUSE_OK) {
        vae_free(m);
        return st;
    }
    *out = m;
    return DIFFUSE_OK;
}

void vae_free(vae_model *m) {
    if (!m) return;
    free(m->res_slab);
    free(m);
}

/* ------------------------------------------------------------------------ */
/* Blocks                                                                    */
/* ------------------------------------------------------------------------ */

static void swap_maps(float **a, float **b) {
    float *t = *a;
    *a = *b;
    *b = t;
}

/* x (N, C, HW) += to_out(softmax(q k^T / sqrt(C)) v), one head of width C,
 * q/k/v = to_q/k/v(GN(x)) on the (N, HW, C) token sequence. Temporaries:
 * 5 N*HW*C floats. */
static diffuse_status vae_attention(nn_ctx *c, const vae_mid_block *mb, float *x, int n, int hw) {
    const bk_ops *o = c->bk ? c->bk->ops : NULL;
    const int C = mb->attn_norm.c;
    const size_t count = (size_t)n * hw * C;
    float *g, *tok, *q, *k, *v;
    NN_ALLOC(c, g, count);   /* (N, C, HW) GN(x), then the attention output (N, HW, C) */
    NN_ALLOC(c, tok, count); /* (N, HW, C) tokens, then to_out's output */
    NN_ALLOC(c, q, count);   /* (N, HW, C), then the output back in (N, C, HW) */
    NN_ALLOC(c, k, count);
    NN_ALLOC(c, v, count);
    NN_TRY(nn_group_norm(c, &mb->attn_norm, x, g, n, hw, mb->groups, VAE_EPS, 0));
    NN_OP(c, o->transpose(c->bk, g, tok, n, C, hw));
    NN_TRY(nn_linear_forward(c, &mb->q, tok, q, n * hw));
    NN_TRY(nn_linear_forward(c, &mb->k, tok, k, n * hw));
    NN_TRY(nn_linear_forward(c, &mb->v, tok, v, n * hw));
    const bk_attention_args a = {q, k, v, g, n, hw, hw, 1, C, C, C, 1.0f / sqrtf((float)C), 0};
    NN_OP(c, o->attention(c->bk, &a));
    NN_TRY(nn_linear_forward(c, &mb->out, g, tok, n * hw));
    NN_OP(c, o->transpose(c->bk, tok, q, n, hw, C));
    NN_OP(c, o->add(c->bk, x, q, x, count));
    return DIFFUSE_OK;
}

/* resnet, attention, resnet on the map in *a (N, C, H, W); the result ends
 * in *a (the maps are swapped as they go). */
static diffuse_status vae_mid_forward(nn_ctx *c, const vae_mid_block *mb, float **a, float **b, int n, int h, int w) {
    NN_TRY(resnet_block_forward(c, &mb->res[0], *a, NULL, *b, n, h, w));
    swap_maps(a, b);
    if (mb->has_attn) {
        const size_t mark = nn_mark(c);
        diffuse_status st = vae_attention(c, mb, *a, n, h * w);
        nn_release(c, mark);
        NN_TRY(st);
    }
    NN_TRY(resnet_block_forward(c, &mb->res[1], *a, NULL, *b, n, h, w));
    swap_maps(a, b);
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* Encoder and decoder                                                       */
/* ------------------------------------------------------------------------ */

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Floats of the largest feature map of one encoder sample at H x W. */
static size_t enc_max_map(const vae_config *c, int h, int w) {
    size_t mx = 0;
    for (int i = 0; i < c->levels; i++) {
        mx = max_size(mx, (size_t)c->block_out[i] * h * w);
        if (i < c->levels - 1) h /= 2, w /= 2;
    }
    return max_size(mx, (size_t)2 * c->latent_channels * h * w);
}

/* Floats of the largest feature map of one decoder sample at latent h x w. */
static size_t dec_max_map(const vae_config *c, int h, int w) {
    size_t mx = (size_t)max_size((size_t)c->latent_channels, (size_t)c->block_out[c->levels - 1]) * h * w;
    for (int i = 0; i < c->levels; i++) {
        const size_t ch = (size_t)c->block_out[c->levels - 1 - i];
        mx = max_size(mx, ch * h * w);
        if (i < c->levels - 1) h *= 2, w *= 2;
        mx = max_size(mx, ch * h * w);
    }
    return mx;
}

/* x (N, Ci, H, W) -> moments (N, 2L, H/f, W/f); H, W multiples of f. */
static diffuse_status vae_encoder_run(nn_ctx *c, const vae_model *m, const float *x, int n, int h, int w,
                                      float *moments) {
    const vae_config *cf = &m->cfg;
    const size_t map = (size_t)n * enc_max_map(cf, h, w);
    float *a, *b; /* ping-pong (N, C, h, w) maps */
    NN_ALLOC(c, a, map);
    NN_ALLOC(c, b, map);
    NN_TRY(nn_conv_same(c, &m->enc_conv_in, x, a, n, h, w));
    for (int i = 0; i < cf->levels; i++) {
        const vae_down_block *d = &m->down[i];
        for (int j = 0; j < cf->layers; j++) {
            NN_TRY(nn_check_cancel(c));
            NN_TRY(resnet_block_forward(c, &d->res[j], a, NULL, b, n, h, w));
            swap_maps(&a, &b);
        }
        if (!d->has_down) continue;
        NN_TRY(downsample2d_forward(c, &d->down, a, b, n, h, w));
        downsample2d_out_size(&d->down, h, w, &h, &w);
        swap_maps(&a, &b);
    }
    NN_TRY(vae_mid_forward(c, &m->enc_mid, &a, &b, n, h, w));
    NN_TRY(nn_group_norm(c, &m->enc_norm_out, a, a, n, h * w, cf->groups, VAE_EPS, 1));
    if (!m->quant_conv.w) return nn_conv_same(c, &m->enc_conv_out, a, moments, n, h, w);
    NN_TRY(nn_conv_same(c, &m->enc_conv_out, a, b, n, h, w));
    return nn_conv_same(c, &m->quant_conv, b, moments, n, h, w);
}

/* latents (N, L, h, w), scaled -> image (N, Co, h*f, w*f). */
static diffuse_status vae_decoder_run(nn_ctx *c, const vae_model *m, const float *latents, int n, int h, int w,
                                      float *image) {
    const vae_config *cf = &m->cfg;
    const size_t map = (size_t)n * dec_max_map(cf, h, w);
    float *a, *b; /* ping-pong (N, C, h, w) maps */
    NN_ALLOC(c, a, map);
    NN_ALLOC(c, b, map);
    /* z = latents / scaling_factor + shift_factor (N, L, h, w) */
    NN_OP(c, c->bk->ops->scale(c->bk, latents, a, (size_t)n * cf->latent_channels * h * w,
                               1.0f / cf->scaling_factor, cf->shift_factor));
    if (m->post_quant_conv.w) {
        NN_TRY(nn_conv_same(c, &m->post_quant_conv, a, b, n, h, w));
        swap_maps(&a, &b);
    }
    NN_TRY(nn_conv_same(c, &m->dec_conv_in, a, b, n, h, w));
    swap_maps(&a, &b);
    NN_TRY(nn_check_cancel(c));
    NN_TRY(vae_mid_forward(c, &m->dec_mid, &a, &b, n, h, w));
    for (int i = 0; i < cf->levels; i++) {
        const vae_up_block *u = &m->up[i];
        for (int j = 0; j < cf->layers + 1; j++) {
            NN_TRY(nn_check_cancel(c));
            NN_TRY(resnet_block_forward(c, &u->res[j], a, NULL, b, n, h, w));
            swap_maps(&a, &b);
        }
        if (!u->has_up) continue;
        NN_TRY(upsample2d_forward(c, &u->up, a, b, n, h, w, 2 * h, 2 * w));
        h *= 2, w *= 2;
        swap_maps(&a, &b);
    }
    NN_TRY(nn_check_cancel(c));
    NN_TRY(nn_group_norm(c, &m->dec_norm_out, a, a, n, h * w, cf->groups, VAE_EPS, 1));
    return nn_conv_same(c, &m->dec_conv_out, a, image, n, h, w);
}

/* ------------------------------------------------------------------------ */
/* Passes                                                                    */
/* ------------------------------------------------------------------------ */

/* Checks the sizes of a pass on an image of height x width; writes the reason
 * into @err (may be NULL). */
static diffuse_status vae_check_size(const vae_model *m, const char *what, int batch, int height, int width,
                                     df_error *err) {
    const int f = m->cfg.scale;
    if (batch <= 0 || batch > 65536 || height <= 0 || width <= 0 || height > VAE_MAX_SIDE || width > VAE_MAX_SIDE ||
        height % f || width % f)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "%s: %d images of %dx%d: sizes must be positive multiples of the VAE scale factor %d, at most "
                       "%d, and the batch at most 65536", what, batch, height, width, f, VAE_MAX_SIDE);
    return DIFFUSE_OK;
}

/* The same for a decode of h x w latents. */
static diffuse_status vae_check_latent_size(const vae_model *m, const char *what, int batch, int h, int w,
                                            df_error *err) {
    const int side = VAE_MAX_SIDE / m->cfg.scale;
    if (h <= 0 || w <= 0 || h > side || w > side)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: latents of %dx%d (1 to %d per side)", what, h, w, side);
    return vae_check_size(m, what, batch, h * m->cfg.scale, w * m->cfg.scale, err);
}

/* One pass inside its own arena mark: the encoder on an image of h x w, or
 * the decoder on latents of h x w. */
static diffuse_status vae_run_pass(nn_ctx *c, const vae_model *m, vae_pass which, const float *in, int batch, int h,
                                   int w, float *out) {
    const size_t mark = nn_mark(c);
    diffuse_status st = which == VAE_ENCODE ? vae_encoder_run(c, m, in, batch, h, w, out)
                                            : vae_decoder_run(c, m, in, batch, h, w, out);
    nn_release(c, mark);
    return st;
}

size_t vae_workspace_bytes(const vae_model *m, vae_pass which, int batch, int height, int width) {
    if (!m || vae_check_size(m, "vae_workspace_bytes", batch, height, width, NULL) != DIFFUSE_OK) return 0;
    nn_ctx c = {.planning = 1};
    static const float none[1];
    static float sink[1];
    const int f = which == VAE_ENCODE ? 1 : m->cfg.scale;
    if (vae_run_pass(&c, m, which, none, batch, height / f, width / f, sink) != DIFFUSE_OK) return 0;
    return c.peak + 64 /* alignment of the first allocation */ + BK_OP_SCRATCH_BYTES;
}

diffuse_status vae_encode(const vae_model *m, bk_backend *bk, const float *image, int batch, int height, int width,
                          float *moments) {
    if (!bk) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (!m || !image || !moments)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_encode: NULL %s",
                       !m ? "model" : !image ? "image" : "moments");
    NN_TRY(vae_check_size(m, "vae_encode", batch, height, width, &bk->err));
    nn_ctx c = {.bk = bk};
    return vae_run_pass(&c, m, VAE_ENCODE, image, batch, height, width, moments);
}

diffuse_status vae_decode(const vae_model *m, bk_backend *bk, const float *latents, int batch, int h, int w,
                          float *image) {
    if (!bk) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (!m || !latents || !image)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_decode: NULL %s",
                       !m ? "model" : !latents ? "latents" : "image");
    NN_TRY(vae_check_latent_size(m, "vae_decode", batch, h, w, &bk->err));
    nn_ctx c = {.bk = bk};
    return vae_run_pass(&c, m, VAE_DECODE, latents, batch, h, w, image);
}

/* ------------------------------------------------------------------------ */
/* Posterior                                                                 */
/* ------------------------------------------------------------------------ */

diffuse_status vae_posterior_latents(const vae_model *m, const float *moments, const float *noise, int batch, int h,
                                     int w, float *latents, df_error *err) {
    if (!m || !moments || !latents)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_posterior_latents: NULL %s",
                       !m ? "model" : !moments ? "moments" : "latents");
    if (batch <= 0 || h <= 0 || w <= 0)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_posterior_latents: %d latents of %dx%d", batch, h, w);
    const int L = m->cfg.latent_channels;
    const size_t plane = (size_t)L * h * w; /* one sample's mean (or logvar) */
    const float s = m->cfg.scaling_factor, shift = m->cfg.shift_factor;
    for (int b = 0; b < batch; b++) {
        const float *mean = moments + (size_t)b * 2 * plane, *logvar = mean + plane;
        const float *eps = noise ? noise + (size_t)b * plane : NULL;
        float *out = latents + (size_t)b * plane;
        for (size_t i = 0; i < plane; i++) {
            float x = mean[i];
            if (eps) {
                /* DiagonalGaussianDistribution: std = exp(0.5 * clamp(logvar, -30, 20)) */
                const float lv = logvar[i] < -30.0f ? -30.0f : logvar[i] > 20.0f ? 20.0f : logvar[i];
                x = x + expf(0.5f * lv) * eps[i];
            }
            out[i] = (x - shift) * s;
        }
    }
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* Tiled passes                                                              */
/* ------------------------------------------------------------------------ */

/* diffusers' tiling of one pass (AutoencoderKL._tiled_encode /
 * tiled_decode): input tiles of in_tile x in_tile start every stride =
 * 3/4 in_tile; each output tile (out_tile = in_tile * up / down) is blended
 * over `blend` = out_tile / 4 rows with the tile above and columns with the
 * tile on its left, and its top-left keep x keep part is kept. keep equals
 * stride * up / down, so the kept parts tile the output exactly. */
typedef struct vae_tiling {
    vae_pass pass;
    int in_ch, out_ch;          /* channels of the pass's input and output */
    int up, down;               /* output size = input size * up / down */
    int in_h, in_w, out_h, out_w;
    int in_tile, stride;        /* input tile side, step between tiles */
    int out_tile, blend, keep;
    int rows, cols;             /* tiles along H and W */
} vae_tiling;

/* Host buffers of a tiled pass. */
typedef struct vae_tile_bufs {
    float *in;      /* (N, Cin, in_h, in_w) the whole input */
    float *tile_in; /* (N, Cin, th, tw) one input tile */
    float *prev;    /* (cols) processed output tiles of the row above, each (N, Cout, <= out_tile, <= out_tile) */
    float *cur;     /* (cols) the same for the row being made */
    float *strip;   /* (N, Cout, <= keep, out_w) the kept rows of a tile row */
    float *slab;    /* owns all of the above */
} vae_tile_bufs;

/* Fills @t for @tile (0: diffusers' default from sample_size). Input tile
 * sides: latents for decode (multiple of 4), pixels for encode (multiple of
 * 4f). Returns 0, or -1 for a tile size that does not tile exactly. */
static int vae_tiling_init(const vae_model *m, vae_pass which, int in_h, int in_w, int tile, vae_tiling *t) {
    const vae_config *c = &m->cfg;
    const int f = c->scale, enc = which == VAE_ENCODE;
    if (tile == 0) tile = enc ? c->sample_size : c->sample_size / f;
    const int unit = enc ? 4 * f : 4;
    if (tile < unit || tile % unit || tile > VAE_MAX_SIDE) return -1;
    *t = (vae_tiling){.pass = which, .in_ch = enc ? c->in_channels : c->latent_channels,
                      .out_ch = enc ? 2 * c->latent_channels : c->out_channels, .up = enc ? 1 : f, .down = enc ? f : 1,
                      .in_h = in_h, .in_w = in_w, .in_tile = tile, .stride = tile / 4 * 3};
    t->out_h = in_h * t->up / t->down;
    t->out_w = in_w * t->up / t->down;
    t->out_tile = tile * t->up / t->down;
    t->blend = t->out_tile / 4;
    t->keep = t->out_tile - t->blend;
    t->rows = (in_h + t->stride - 1) / t->stride;
    t->cols = (in_w + t->stride - 1) / t->stride;
    return 0;
}

/* Input tile side at tile index @i along a side of @len. */
static int tile_side(const vae_tiling *t, int i, int len) {
    const int rest = len - i * t->stride;
    return rest < t->in_tile ? rest : t->in_tile;
}

static diffuse_status vae_tile_bufs_alloc(const vae_tiling *t, int n, vae_tile_bufs *b, df_error *err) {
    const size_t in = (size_t)n * t->in_ch * t->in_h * t->in_w;
    const size_t tile_in = (size_t)n * t->in_ch * t->in_tile * t->in_tile;
    const size_t tile_out = (size_t)n * t->out_ch * t->out_tile * t->out_tile;
    const size_t strip = (size_t)n * t->out_ch * t->keep * t->out_w;
    const size_t total = in + tile_in + 2 * (size_t)t->cols * tile_out + strip;
    *b = (vae_tile_bufs){0};
    if (!(b->slab = malloc(total * sizeof(float))))
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "vae tiled %s: cannot allocate %zu bytes of host tile buffers",
                       t->pass == VAE_ENCODE ? "encode" : "decode", total * sizeof(float));
    b->in = b->slab;
    b->tile_in = b->in + in;
    b->prev = b->tile_in + tile_in;
    b->cur = b->prev + (size_t)t->cols * tile_out;
    b->strip = b->cur + (size_t)t->cols * tile_out;
    return DIFFUSE_OK;
}

/* blend_v: the first e = min(ah, bh, extent) rows of b fade in from the last
 * e rows of a: b[y] = a[ah - e + y] * (1 - y/e) + b[y] * (y/e), with the
 * weights rounded to float as torch does for a Python scalar.
 * a (planes, ah, w), b (planes, bh, w). */
static void blend_v(const float *a, int ah, float *b, int bh, size_t planes, int w, int extent) {
    const int e = ah < bh ? (ah < extent ? ah : extent) : (bh < extent ? bh : extent);
    for (size_t p = 0; p < planes; p++) {
        for (int y = 0; y < e; y++) {
            const float wa = (float)(1.0 - (double)y / e), wb = (float)((double)y / e);
            const float *ra = a + (p * ah + (size_t)(ah - e + y)) * w;
            float *rb = b + (p * bh + (size_t)y) * w;
            for (int x = 0; x < w; x++) rb[x] = ra[x] * wa + rb[x] * wb;
        }
    }
}

/* blend_h: the same along columns. a (planes, h, aw), b (planes, h, bw). */
static void blend_h(const float *a, int aw, float *b, int bw, size_t planes, int h, int extent) {
    const int e = aw < bw ? (aw < extent ? aw : extent) : (bw < extent ? bw : extent);
    for (size_t r = 0; r < planes * (size_t)h; r++) {
        const float *ra = a + r * aw + (aw - e);
        float *rb = b + r * bw;
        for (int x = 0; x < e; x++) {
            const float wa = (float)(1.0 - (double)x / e), wb = (float)((double)x / e);
            rb[x] = ra[x] * wa + rb[x] * wb;
        }
    }
}

/* Tile (r, col): slices its input from b->in, runs the pass on the backend
 * (dev_in -> dev_out), downloads the output into cur[col] and blends it with
 * the processed tile above (prev[col]) and on its left (cur[col - 1]), in
 * that order as diffusers does; then copies its kept part into the strip. */
static diffuse_status vae_tile_one(nn_ctx *c, const vae_model *m, const vae_tiling *t, vae_tile_bufs *b, int n,
                                   int r, int col, float *dev_in, float *dev_out) {
    bk_backend *bk = c->bk;
    const int th = tile_side(t, r, t->in_h), tw = tile_side(t, col, t->in_w);
    const size_t planes_in = (size_t)n * t->in_ch, planes_out = (size_t)n * t->out_ch;
    for (size_t p = 0; p < planes_in; p++)
        for (int y = 0; y < th; y++)
            memcpy(b->tile_in + (p * th + y) * tw,
                   b->in + (p * t->in_h + (size_t)r * t->stride + y) * t->in_w + (size_t)col * t->stride,
                   (size_t)tw * sizeof(float));
    NN_TRY(bk->ops->upload(bk, dev_in, b->tile_in, planes_in * th * tw * sizeof(float)));
    NN_TRY(vae_run_pass(c, m, t->pass, dev_in, n, th, tw, dev_out));
    const int oh = th * t->up / t->down, ow = tw * t->up / t->down;
    const size_t tile_floats = planes_out * t->out_tile * t->out_tile;
    float *out = b->cur + col * tile_floats; /* (N, Cout, oh, ow) */
    NN_TRY(bk->ops->download(bk, out, dev_out, planes_out * oh * ow * sizeof(float)));
    if (r > 0)
        blend_v(b->prev + col * tile_floats, tile_side(t, r - 1, t->in_h) * t->up / t->down, out, oh, planes_out, ow,
                t->blend);
    if (col > 0)
        blend_h(b->cur + (col - 1) * tile_floats, tile_side(t, col - 1, t->in_w) * t->up / t->down, out, ow,
                planes_out, oh, t->blend);
    const int kh = oh < t->keep ? oh : t->keep, kw = ow < t->keep ? ow : t->keep;
    for (size_t p = 0; p < planes_out; p++)
        for (int y = 0; y < kh; y++)
            memcpy(b->strip + (p * kh + y) * t->out_w + (size_t)col * t->keep, out + (p * oh + y) * ow,
                   (size_t)kw * sizeof(float));
    return DIFFUSE_OK;
}

/* All tiles, row by row; each finished row's kept strip goes to @out
 * (N, Cout, out_h, out_w) in backend memory. */
static diffuse_status vae_tile_rows(nn_ctx *c, const vae_model *m, const vae_tiling *t, vae_tile_bufs *b, int n,
                                    float *dev_in, float *dev_out, float *out) {
    const size_t planes_out = (size_t)n * t->out_ch;
    for (int r = 0; r < t->rows; r++) {
        for (int col = 0; col < t->cols; col++) NN_TRY(vae_tile_one(c, m, t, b, n, r, col, dev_in, dev_out));
        const int oh = tile_side(t, r, t->in_h) * t->up / t->down, kh = oh < t->keep ? oh : t->keep;
        for (size_t p = 0; p < planes_out; p++)
            NN_TRY(c->bk->ops->upload(c->bk, out + (p * t->out_h + (size_t)r * t->keep) * t->out_w,
                                      b->strip + p * kh * t->out_w, (size_t)kh * t->out_w * sizeof(float)));
        float *done = b->prev;
        b->prev = b->cur;
        b->cur = done;
    }
    return DIFFUSE_OK;
}

/* The arena part of a tiled pass: the backend's input and output tile, then
 * one pass on the largest tile (planning mode sizes it this way). */
static diffuse_status vae_tile_arena(nn_ctx *c, const vae_tiling *t, int n, float **dev_in, float **dev_out) {
    NN_ALLOC(c, *dev_in, (size_t)n * t->in_ch * t->in_tile * t->in_tile);     /* (N, Cin, tile, tile) */
    NN_ALLOC(c, *dev_out, (size_t)n * t->out_ch * t->out_tile * t->out_tile); /* (N, Cout, tile', tile') */
    return DIFFUSE_OK;
}

/* A tiled encode or decode of @in (N, Cin, in_h, in_w) into @out; sizes
 * already checked. */
static diffuse_status vae_tiled_pass(const vae_model *m, bk_backend *bk, vae_pass which, const float *in, int n,
                                     int in_h, int in_w, int tile, float *out) {
    vae_tiling t;
    const char *what = which == VAE_ENCODE ? "vae_encode_tiled" : "vae_decode_tiled";
    const int enc = which == VAE_ENCODE;
    if (vae_tiling_init(m, which, in_h, in_w, tile, &t))
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "%s: tile %d (0: config sample_size %d%s) must be a positive multiple of %d", what, tile,
                       m->cfg.sample_size, enc ? "" : " / f", enc ? 4 * m->cfg.scale : 4);
    nn_ctx c = {.bk = bk};
    if (in_h <= t.in_tile && in_w <= t.in_tile) return vae_run_pass(&c, m, which, in, n, in_h, in_w, out);
    vae_tile_bufs b;
    NN_TRY(vae_tile_bufs_alloc(&t, n, &b, &bk->err));
    const size_t mark = bk_mark(bk);
    float *dev_in = NULL, *dev_out = NULL;
    diffuse_status st = vae_tile_arena(&c, &t, n, &dev_in, &dev_out);
    if (st == DIFFUSE_OK)
        st = bk->ops->download(bk, b.in, in, (size_t)n * t.in_ch * in_h * in_w * sizeof(float));
    if (st == DIFFUSE_OK) st = vae_tile_rows(&c, m, &t, &b, n, dev_in, dev_out, out);
    bk_release(bk, mark);
    free(b.slab);
    return st;
}

size_t vae_tiled_workspace_bytes(const vae_model *m, vae_pass which, int batch, int height, int width, int tile) {
    if (!m || vae_check_size(m, "vae_tiled_workspace_bytes", batch, height, width, NULL) != DIFFUSE_OK) return 0;
    const int f = which == VAE_ENCODE ? 1 : m->cfg.scale, in_h = height / f, in_w = width / f;
    vae_tiling t;
    if (vae_tiling_init(m, which, in_h, in_w, tile, &t)) return 0;
    if (in_h <= t.in_tile && in_w <= t.in_tile) return vae_workspace_bytes(m, which, batch, height, width);
    nn_ctx c = {.planning = 1};
    float *dev_in, *dev_out;
    if (vae_tile_arena(&c, &t, batch, &dev_in, &dev_out) != DIFFUSE_OK) return 0;
    const int th = in_h < t.in_tile ? in_h : t.in_tile, tw = in_w < t.in_tile ? in_w : t.in_tile;
    if (vae_run_pass(&c, m, which, dev_in, batch, th, tw, dev_out) != DIFFUSE_OK) return 0;
    return c.peak + 64 + BK_OP_SCRATCH_BYTES;
}

diffuse_status vae_encode_tiled(const vae_model *m, bk_backend *bk, const float *image, int batch, int height,
                                int width, int tile, float *moments) {
    if (!bk) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (!m || !image || !moments)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_encode_tiled: NULL %s",
                       !m ? "model" : !image ? "image" : "moments");
    NN_TRY(vae_check_size(m, "vae_encode_tiled", batch, height, width, &bk->err));
    return vae_tiled_pass(m, bk, VAE_ENCODE, image, batch, height, width, tile, moments);
}

diffuse_status vae_decode_tiled(const vae_model *m, bk_backend *bk, const float *latents, int batch, int h, int w,
                                int tile, float *image) {
    if (!bk) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (!m || !latents || !image)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "vae_decode_tiled: NULL %s",
                       !m ? "model" : !latents ? "latents" : "image");
    NN_TRY(vae_check_latent_size(m, "vae_decode_tiled", batch, h, w, &bk->err));
    return vae_tiled_pass(m, bk, VAE_DECODE, latents, batch, h, w, tile, image);
}
