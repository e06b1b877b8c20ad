/*
 * blocks.c - ResnetBlock2D, Downsample2D and Upsample2D on the backend ops,
 * the layer helpers they are made of, and the forward context whose
 * planning mode sizes a network's arena by walking its forward without
 * running an op. Shared by the UNet and the VAE.
 */
#include "nets/blocks.h"

#include <stdatomic.h>

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Forward context                                                           */
/* ------------------------------------------------------------------------ */

#define NN_ALIGN 64 /* bk_alloc's alignment, mirrored by the planner */

/* Planning hands out this address: ops never run there, so nothing reads or
 * writes it, and callers only pass it on to ops. */
static _Alignas(NN_ALIGN) float nn_plan_placeholder[16];

diffuse_status nn_check_cancel(nn_ctx *c) {
    if (c->planning || !c->bk->cancel || !atomic_load(c->bk->cancel)) return DIFFUSE_OK;
    return df_fail(&c->bk->err, DIFFUSE_CANCELLED, "cancelled by diffuse_job_cancel");
}

float *nn_alloc(nn_ctx *c, size_t floats) {
    if (!c->planning) return bk_alloc(c->bk, floats * sizeof(float));
    const size_t start = (c->used + (NN_ALIGN - 1)) & ~(size_t)(NN_ALIGN - 1);
    c->used = start + floats * sizeof(float);
    if (c->used > c->peak) c->peak = c->used;
    return nn_plan_placeholder;
}

size_t nn_mark(const nn_ctx *c) { return c->planning ? c->used : bk_mark(c->bk); }

void nn_release(nn_ctx *c, size_t mark) {
    if (c->planning)
        c->used = mark;
    else
        bk_release(c->bk, mark);
}

diffuse_status nn_alloc_failed(const nn_ctx *c) {
    return c->bk && c->bk->err.status != DIFFUSE_OK ? c->bk->err.status : DIFFUSE_ERR_OUT_OF_MEMORY;
}

/* ------------------------------------------------------------------------ */
/* Weights                                                                   */
/* ------------------------------------------------------------------------ */

diffuse_status nn_tensor(const nn_source *s, const char *base, const char *leaf, int ndim, const int64_t *shape,
                         const float **out, df_error *err) {
    char key[512];
    snprintf(key, sizeof key, "%s%s%s", s->prefix ? s->prefix : "", base, leaf);
    const st_tensor *t = st_find(s->file, key);
    if (!t || !t->f32)
        return df_fail(err, DIFFUSE_ERR_MODEL_MISSING_TENSOR, "%s: %s tensor %s is %s", s->file->path, s->what, key,
                       t ? "not a float tensor" : "missing");
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char got[128], want[128];
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: %s tensor %s has shape %s, expected %s", s->file->path,
                       s->what, key, st_shape_str(t->shape, t->ndim, got, sizeof got),
                       st_shape_str(shape, ndim, want, sizeof want));
    }
    *out = t->f32;
    return DIFFUSE_OK;
}

diffuse_status nn_conv_load(const nn_source *s, const char *base, int c_out, int c_in, int k, int bias, nn_conv *cv,
                            df_error *err) {
    const int64_t wshape[4] = {c_out, c_in, k, k}, bshape[1] = {c_out};
    *cv = (nn_conv){.c_in = c_in, .c_out = c_out, .k = k};
    NN_TRY(nn_tensor(s, base, ".weight", 4, wshape, &cv->w, err));
    if (bias) NN_TRY(nn_tensor(s, base, ".bias", 1, bshape, &cv->b, err));
    return DIFFUSE_OK;
}

diffuse_status nn_linear_load(const nn_source *s, const char *base, int out_f, int in_f, int bias, int conv1x1,
                              nn_linear *l, df_error *err) {
    const int64_t wshape[4] = {out_f, in_f, 1, 1}, bshape[1] = {out_f};
    *l = (nn_linear){.in = in_f, .out = out_f};
    NN_TRY(nn_tensor(s, base, ".weight", conv1x1 ? 4 : 2, wshape, &l->w, err));
    if (bias) NN_TRY(nn_tensor(s, base, ".bias", 1, bshape, &l->b, err));
    return DIFFUSE_OK;
}

diffuse_status nn_norm_load(const nn_source *s, const char *base, int c, nn_norm *n, df_error *err) {
    const int64_t shape[1] = {c};
    *n = (nn_norm){.c = c};
    NN_TRY(nn_tensor(s, base, ".weight", 1, shape, &n->g, err));
    return nn_tensor(s, base, ".bias", 1, shape, &n->b, err);
}

/* ------------------------------------------------------------------------ */
/* Layers                                                                    */
/* ------------------------------------------------------------------------ */

diffuse_status nn_conv_same(nn_ctx *c, const nn_conv *cv, const float *in, float *out, int n, int h, int w) {
    const int p = (cv->k - 1) / 2;
    const int cx = p > 0 && c->bk && c->bk->seamless_x, cy = p > 0 && c->bk && c->bk->seamless_y;
    const bk_conv2d_args a = {in, cv->w, cv->b, out, n, cv->c_in, h, w, cv->c_out, cv->k, cv->k, 1, p, p, p, p,
                              cx, cy};
    NN_OP(c, c->bk->ops->conv2d(c->bk, &a));
    return DIFFUSE_OK;
}

diffuse_status nn_linear_forward(nn_ctx *c, const nn_linear *l, const float *in, float *out, int rows) {
    const bk_linear_args a = {in, l->w, l->b, out, rows, l->in, l->out};
    NN_OP(c, c->bk->ops->linear(c->bk, &a));
    return DIFFUSE_OK;
}

diffuse_status nn_group_norm(nn_ctx *c, const nn_norm *g, const float *in, float *out, int n, int hw, int groups,
                             float eps, int silu) {
    const bk_group_norm_args a = {in, g->g, g->b, out, n, g->c, hw, groups, eps, silu};
    NN_OP(c, c->bk->ops->group_norm(c->bk, &a));
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* ResnetBlock2D                                                             */
/* ------------------------------------------------------------------------ */

diffuse_status resnet_block_load(const nn_source *s, const char *base, int c_in, int c_out, int temb, int groups,
                                 float eps, float out_scale, resnet_block *r, df_error *err) {
    if (groups <= 0 || c_in % groups || c_out % groups)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: %s resnet %s: %d groups do not divide %d and %d channels",
                       s->file->path, s->what, base, groups, c_in, c_out);
    *r = (resnet_block){.c_in = c_in, .c_out = c_out, .temb = temb, .groups = groups, .eps = eps,
                        .out_scale = out_scale};
    char name[256];
#define RB_NAME(leaf) (snprintf(name, sizeof name, "%s%s", base, leaf), name)
    NN_TRY(nn_norm_load(s, RB_NAME("norm1"), c_in, &r->norm1, err));
    NN_TRY(nn_conv_load(s, RB_NAME("conv1"), c_out, c_in, 3, 1, &r->conv1, err));
    if (temb > 0) NN_TRY(nn_linear_load(s, RB_NAME("time_emb_proj"), c_out, temb, 1, 0, &r->temb_proj, err));
    NN_TRY(nn_norm_load(s, RB_NAME("norm2"), c_out, &r->norm2, err));
    NN_TRY(nn_conv_load(s, RB_NAME("conv2"), c_out, c_out, 3, 1, &r->conv2, err));
    if (c_in != c_out) NN_TRY(nn_conv_load(s, RB_NAME("conv_shortcut"), c_out, c_in, 1, 1, &r->shortcut, err));
#undef RB_NAME
    return DIFFUSE_OK;
}

/* The body of resnet_block_forward; its temporaries are released by the caller. */
static diffuse_status resnet_run(nn_ctx *c, const resnet_block *r, const float *x, const float *temb_act,
                                 float *out, int n, int h, int w) {
    const bk_ops *o = c->bk ? c->bk->ops : NULL;
    const int hw = h * w;
    const size_t out_n = (size_t)n * r->c_out * hw;
    float *a, *b;
    NN_ALLOC(c, a, (size_t)n * r->c_in * hw); /* (N, Cin, HW) silu(GN1(x)) */
    NN_ALLOC(c, b, out_n);                     /* (N, Cout, HW) conv1, GN2, shortcut */
    NN_TRY(nn_group_norm(c, &r->norm1, x, a, n, hw, r->groups, r->eps, 1));
    NN_TRY(nn_conv_same(c, &r->conv1, a, b, n, h, w));
    if (r->temb > 0) {
        float *tp;
        NN_ALLOC(c, tp, (size_t)n * r->c_out); /* (N, Cout) */
        NN_TRY(nn_linear_forward(c, &r->temb_proj, temb_act, tp, n));
        NN_OP(c, o->add_channel(c->bk, b, tp, b, n, r->c_out, hw));
    }
    NN_TRY(nn_group_norm(c, &r->norm2, b, b, n, hw, r->groups, r->eps, 1));
    NN_TRY(nn_conv_same(c, &r->conv2, b, out, n, h, w));
    const float *skip = x;
    if (r->shortcut.w) {
        NN_TRY(nn_conv_same(c, &r->shortcut, x, b, n, h, w));
        skip = b;
    }
    NN_OP(c, o->add(c->bk, out, skip, out, out_n));
    if (r->out_scale != 1.0f) NN_OP(c, o->scale(c->bk, out, out, out_n, 1.0f / r->out_scale, 0.0f));
    return DIFFUSE_OK;
}

diffuse_status resnet_block_forward(nn_ctx *c, const resnet_block *r, const float *x, const float *temb_act,
                                    float *out, int n, int h, int w) {
    if (r->temb > 0 && !temb_act && !c->planning)
        return df_fail(&c->bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "resnet block: no time embedding given");
    const size_t mark = nn_mark(c);
    diffuse_status st = resnet_run(c, r, x, temb_act, out, n, h, w);
    nn_release(c, mark);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Downsample2D                                                              */
/* ------------------------------------------------------------------------ */

diffuse_status downsample2d_load(const nn_source *s, const char *base, int channels, int padding, downsample2d *d,
                                 df_error *err) {
    if (padding < 0)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: downsample padding %d is negative", s->what, padding);
    char name[256];
    snprintf(name, sizeof name, "%sconv", base);
    d->padding = padding;
    return nn_conv_load(s, name, channels, channels, 3, 1, &d->conv, err);
}

/* Padding (top, bottom, left, right) of the stride-2 conv. */
static void downsample_pads(const downsample2d *d, int pad[4]) {
    const int p = d->padding;
    pad[0] = pad[2] = p;
    pad[1] = pad[3] = p ? p : 1; /* padding 0: F.pad(x, (0, 1, 0, 1)) */
}

void downsample2d_out_size(const downsample2d *d, int h, int w, int *h_out, int *w_out) {
    int pad[4];
    downsample_pads(d, pad);
    const int hp = h + pad[0] + pad[1], wp = w + pad[2] + pad[3];
    *h_out = hp >= 3 ? (hp - 3) / 2 + 1 : 0;
    *w_out = wp >= 3 ? (wp - 3) / 2 + 1 : 0;
}

diffuse_status downsample2d_forward(nn_ctx *c, const downsample2d *d, const float *x, float *out, int n, int h,
                                    int w) {
    int pad[4];
    downsample_pads(d, pad);
    const nn_conv *cv = &d->conv;
    /* A padded conv wraps around in seamless runs; the VAE encoder's explicit
     * F.pad (padding 0) stays zeros, as in diffusers with circular convs. */
    const int cx = d->padding > 0 && c->bk && c->bk->seamless_x, cy = d->padding > 0 && c->bk && c->bk->seamless_y;
    const bk_conv2d_args a = {x,  cv->w,  cv->b,  out,    n,      cv->c_in, h,     w,
                              cv->c_out, 3, 3, 2, pad[0], pad[1], pad[2], pad[3], cx, cy};
    NN_OP(c, c->bk->ops->conv2d(c->bk, &a));
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* Upsample2D                                                                */
/* ------------------------------------------------------------------------ */

diffuse_status upsample2d_load(const nn_source *s, const char *base, int channels, upsample2d *u, df_error *err) {
    char name[256];
    snprintf(name, sizeof name, "%sconv", base);
    return nn_conv_load(s, name, channels, channels, 3, 1, &u->conv, err);
}

/* Drops the last row (@crop_h) and/or column (@crop_w) of every (H2, W2)
 * plane: a 1-channel conv with a (1 + crop_h) x (1 + crop_w) kernel whose only
 * nonzero tap is 1 at (0, 0), so out[y, x] = in[y, x] exactly. The backend
 * has no crop op and this is one on every backend. */
static diffuse_status crop_last(nn_ctx *c, const float *in, float *out, int planes, int h2, int w2, int crop_h,
                                int crop_w) {
    float *delta; /* (1, 1, KH, KW) */
    NN_ALLOC(c, delta, 4);
    static const float taps[4] = {1.0f, 0.0f, 0.0f, 0.0f};
    NN_OP(c, c->bk->ops->upload(c->bk, delta, taps, sizeof taps));
    const bk_conv2d_args a = {in, delta, NULL, out, planes, 1, h2, w2, 1, 1 + crop_h, 1 + crop_w, 1, 0, 0, 0, 0, 0, 0};
    NN_OP(c, c->bk->ops->conv2d(c->bk, &a));
    return DIFFUSE_OK;
}

static diffuse_status upsample_run(nn_ctx *c, const upsample2d *u, const float *x, float *out, int n, int h, int w,
                                   int h_out, int w_out) {
    const int ch = u->conv.c_in;
    const size_t up_n = (size_t)n * ch * 4 * h * w;
    float *up; /* (N, C, 2H, 2W) */
    NN_ALLOC(c, up, up_n);
    NN_OP(c, c->bk->ops->upsample2x(c->bk, x, up, n * ch, h, w));
    if (h_out != 2 * h || w_out != 2 * w) {
        float *cropped; /* (N, C, Hout, Wout) */
        NN_ALLOC(c, cropped, (size_t)n * ch * h_out * w_out);
        NN_TRY(crop_last(c, up, cropped, n * ch, 2 * h, 2 * w, h_out != 2 * h, w_out != 2 * w));
        up = cropped;
    }
    return nn_conv_same(c, &u->conv, up, out, n, h_out, w_out);
}

diffuse_status upsample2d_forward(nn_ctx *c, const upsample2d *u, const float *x, float *out, int n, int h, int w,
                                  int h_out, int w_out) {
    if ((h_out != 2 * h && h_out != 2 * h - 1) || (w_out != 2 * w && w_out != 2 * w - 1) || h_out < 1 || w_out < 1) {
        if (c->planning) return DIFFUSE_ERR_INVALID_ARGUMENT;
        return df_fail(&c->bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "upsample: %dx%d -> %dx%d is not nearest x2 (optionally one row/column less)", h, w, h_out,
                       w_out);
    }
    const size_t mark = nn_mark(c);
    diffuse_status st = upsample_run(c, u, x, out, n, h, w, h_out, w_out);
    nn_release(c, mark);
    return st;
}
