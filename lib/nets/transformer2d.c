/*
 * transformer2d.c - Transformer2DModel / BasicTransformerBlock / Attention of
 * the Stable-Diffusion UNet on the backend ops. The feature map becomes a
 * token sequence (transpose NCHW -> (N, HW, C)), runs through the blocks and
 * goes back; the 1x1-conv projections of SD 1.x are the same GEMMs as the
 * Linear projections of SD 2.x, so both run as linear layers on tokens.
 */
#include "nets/transformer2d.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Feed-forward rows per chunk: its (rows, 8D) + (rows, 4D) temporaries stay
 * at 13 * 2048 * D floats (34 MB at D = 320) whatever the image size, and a
 * 2048-row GEMM already runs at full speed. */
#define TF_FF_ROWS 2048

/* LayerNorm eps of BasicTransformerBlock (Transformer2DModel's norm_eps
 * default) and GroupNorm eps of Transformer2DModel. */
#define TF_LN_EPS 1e-5f
#define TF_GN_EPS 1e-6f

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

static diffuse_status attention_load(const nn_source *s, const char *base, int d, int kv_dim, attention_weights *a,
                                     df_error *err) {
    char name[400]; /* base is at most 320 bytes */
#define AT_NAME(leaf) (snprintf(name, sizeof name, "%s%s", base, leaf), name)
    NN_TRY(nn_linear_load(s, AT_NAME("to_q"), d, d, 0, 0, &a->q, err));
    NN_TRY(nn_linear_load(s, AT_NAME("to_k"), d, kv_dim, 0, 0, &a->k, err));
    NN_TRY(nn_linear_load(s, AT_NAME("to_v"), d, kv_dim, 0, 0, &a->v, err));
    NN_TRY(nn_linear_load(s, AT_NAME("to_out.0"), d, d, 1, 0, &a->out, err));
#undef AT_NAME
    return DIFFUSE_OK;
}

static diffuse_status block_load(const nn_source *s, const char *base, int d, int cross_dim, transformer_block *b,
                                 df_error *err) {
    char name[320]; /* base is at most 256 bytes */
#define TB_NAME(leaf) (snprintf(name, sizeof name, "%s%s", base, leaf), name)
    NN_TRY(nn_norm_load(s, TB_NAME("norm1"), d, &b->norm1, err));
    NN_TRY(attention_load(s, TB_NAME("attn1."), d, d, &b->attn1, err));
    NN_TRY(nn_norm_load(s, TB_NAME("norm2"), d, &b->norm2, err));
    NN_TRY(attention_load(s, TB_NAME("attn2."), d, cross_dim, &b->attn2, err));
    NN_TRY(nn_norm_load(s, TB_NAME("norm3"), d, &b->norm3, err));
    NN_TRY(nn_linear_load(s, TB_NAME("ff.net.0.proj"), 8 * d, d, 1, 0, &b->ff_in, err));
    NN_TRY(nn_linear_load(s, TB_NAME("ff.net.2"), d, 4 * d, 1, 0, &b->ff_out, err));
#undef TB_NAME
    return DIFFUSE_OK;
}

static diffuse_status transformer2d_load_weights(const nn_source *s, const char *base, transformer2d *t,
                                                 df_error *err) {
    char name[256];
    snprintf(name, sizeof name, "%snorm", base);
    NN_TRY(nn_norm_load(s, name, t->channels, &t->norm, err));
    snprintf(name, sizeof name, "%sproj_in", base);
    NN_TRY(nn_linear_load(s, name, t->inner, t->channels, 1, !t->linear_proj, &t->proj_in, err));
    for (int i = 0; i < t->layers; i++) {
        snprintf(name, sizeof name, "%stransformer_blocks.%d.", base, i);
        NN_TRY(block_load(s, name, t->inner, t->cross_dim, &t->blocks[i], err));
    }
    snprintf(name, sizeof name, "%sproj_out", base);
    return nn_linear_load(s, name, t->channels, t->inner, 1, !t->linear_proj, &t->proj_out, err);
}

diffuse_status transformer2d_load(const nn_source *s, const char *base, int channels, int heads, int cross_dim,
                                  int layers, int groups, int linear_proj, transformer2d *t, df_error *err) {
    *t = (transformer2d){0};
    if (heads <= 0 || heads > channels || layers <= 0 || groups <= 0 || channels % groups)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                       "%s: transformer %s: %d heads, %d layers and %d groups do not fit %d channels", s->what, base,
                       heads, layers, groups, channels);
    *t = (transformer2d){.channels = channels, .heads = heads, .head_dim = channels / heads,
                         .inner = heads * (channels / heads), .cross_dim = cross_dim, .layers = layers,
                         .groups = groups, .linear_proj = linear_proj};
    if (!(t->blocks = calloc((size_t)layers, sizeof *t->blocks)))
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "%s: transformer %s: out of memory", s->what, base);
    diffuse_status st = transformer2d_load_weights(s, base, t, err);
    if (st != DIFFUSE_OK) transformer2d_free(t);
    return st;
}

void transformer2d_free(transformer2d *t) {
    if (!t) return;
    free(t->blocks);
    t->blocks = NULL;
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

/* h (M, D) += to_out(attention(LN(h) W_q, kv W_k, kv W_v)); kv is LN(h)
 * itself (self-attention, @text NULL) or the text states (N, S, Dc). */
static diffuse_status tf_attention(nn_ctx *c, const transformer2d *t, const nn_norm *ln,
                                   const attention_weights *w, float *h, const float *text, int seq, int n,
                                   int hw) {
    const int d = t->inner, m = n * hw, kv_rows = text ? n * seq : m;
    float *nrm, *q, *k, *v, *att;
    NN_ALLOC(c, nrm, (size_t)m * d); /* (M, D) LN(h), then the projected output */
    NN_ALLOC(c, q, (size_t)m * d);   /* (N, HW, D) */
    NN_ALLOC(c, k, (size_t)kv_rows * d); /* (N, Skv, D) */
    NN_ALLOC(c, v, (size_t)kv_rows * d);
    NN_ALLOC(c, att, (size_t)m * d); /* (N, HW, D) */
    const bk_layer_norm_args la = {h, ln->g, ln->b, nrm, m, d, TF_LN_EPS};
    NN_OP(c, c->bk->ops->layer_norm(c->bk, &la));
    const float *kv = text ? text : nrm;
    NN_TRY(nn_linear_forward(c, &w->q, nrm, q, m));
    NN_TRY(nn_linear_forward(c, &w->k, kv, k, kv_rows));
    NN_TRY(nn_linear_forward(c, &w->v, kv, v, kv_rows));
    const bk_attention_args aa = {q, k, v, att, n, hw, text ? seq : hw, t->heads, t->head_dim, d, d,
                                  1.0f / sqrtf((float)t->head_dim), 0};
    NN_OP(c, c->bk->ops->attention(c->bk, &aa));
    NN_TRY(nn_linear_forward(c, &w->out, att, nrm, m));
    NN_OP(c, c->bk->ops->add(c->bk, h, nrm, h, (size_t)m * d));
    return DIFFUSE_OK;
}

/* h (M, D) += ff_out(geglu(ff_in(LN3(h)))), TF_FF_ROWS rows at a time. */
static diffuse_status tf_feed_forward(nn_ctx *c, const transformer2d *t, const transformer_block *b, float *h,
                                      int m) {
    const bk_ops *o = c->bk ? c->bk->ops : NULL;
    const int d = t->inner, chunk = m < TF_FF_ROWS ? m : TF_FF_ROWS;
    float *nrm, *proj, *gated;
    NN_ALLOC(c, nrm, (size_t)chunk * d);       /* (rows, D) */
    NN_ALLOC(c, proj, (size_t)chunk * 8 * d);  /* (rows, 8D) = [h | gate] */
    NN_ALLOC(c, gated, (size_t)chunk * 4 * d); /* (rows, 4D) */
    if (c->planning) return DIFFUSE_OK;
    for (int r0 = 0; r0 < m; r0 += chunk) {
        const int rows = m - r0 < chunk ? m - r0 : chunk;
        float *hr = h + (size_t)r0 * d;
        const bk_layer_norm_args la = {hr, b->norm3.g, b->norm3.b, nrm, rows, d, TF_LN_EPS};
        NN_TRY(o->layer_norm(c->bk, &la));
        NN_TRY(nn_linear_forward(c, &b->ff_in, nrm, proj, rows));
        NN_TRY(o->geglu(c->bk, proj, gated, rows, 4 * d));
        NN_TRY(nn_linear_forward(c, &b->ff_out, gated, nrm, rows));
        NN_TRY(o->add(c->bk, hr, nrm, hr, (size_t)rows * d));
    }
    return DIFFUSE_OK;
}

/* One BasicTransformerBlock on h (M, D); each part releases its temporaries. */
static diffuse_status tf_block(nn_ctx *c, const transformer2d *t, const transformer_block *b, float *h,
                               const float *text, int seq, int n, int hw) {
    size_t mark = nn_mark(c);
    diffuse_status st = tf_attention(c, t, &b->norm1, &b->attn1, h, NULL, 0, n, hw);
    nn_release(c, mark);
    if (st == DIFFUSE_OK) st = tf_attention(c, t, &b->norm2, &b->attn2, h, text, seq, n, hw);
    nn_release(c, mark);
    if (st == DIFFUSE_OK) st = tf_feed_forward(c, t, b, h, n * hw);
    nn_release(c, mark);
    return st;
}

/* h (M, D) = proj_in(transpose(GN(x))). */
static diffuse_status tf_project_in(nn_ctx *c, const transformer2d *t, const float *x, float *h, int n, int hw) {
    float *g, *tok;
    NN_ALLOC(c, g, (size_t)n * t->channels * hw);   /* (N, C, HW) */
    NN_ALLOC(c, tok, (size_t)n * hw * t->channels); /* (N, HW, C) */
    NN_TRY(nn_group_norm(c, &t->norm, x, g, n, hw, t->groups, TF_GN_EPS, 0));
    NN_OP(c, c->bk->ops->transpose(c->bk, g, tok, n, t->channels, hw));
    return nn_linear_forward(c, &t->proj_in, tok, h, n * hw);
}

/* x (N, C, HW) += transpose(proj_out(h)). */
static diffuse_status tf_project_out(nn_ctx *c, const transformer2d *t, const float *h, float *x, int n, int hw) {
    const size_t count = (size_t)n * hw * t->channels;
    float *tok, *map;
    NN_ALLOC(c, tok, count); /* (N, HW, C) */
    NN_ALLOC(c, map, count); /* (N, C, HW) */
    NN_TRY(nn_linear_forward(c, &t->proj_out, h, tok, n * hw));
    NN_OP(c, c->bk->ops->transpose(c->bk, tok, map, n, hw, t->channels));
    NN_OP(c, c->bk->ops->add(c->bk, x, map, x, count));
    return DIFFUSE_OK;
}

static diffuse_status tf_run(nn_ctx *c, const transformer2d *t, float *x, const float *text, int seq, int n, int hw) {
    float *h; /* (M, D) token stream */
    NN_ALLOC(c, h, (size_t)n * hw * t->inner);
    size_t mark = nn_mark(c);
    diffuse_status st = tf_project_in(c, t, x, h, n, hw);
    nn_release(c, mark);
    for (int i = 0; st == DIFFUSE_OK && i < t->layers; i++) st = tf_block(c, t, &t->blocks[i], h, text, seq, n, hw);
    if (st == DIFFUSE_OK) st = tf_project_out(c, t, h, x, n, hw);
    return st;
}

diffuse_status transformer2d_forward(nn_ctx *c, const transformer2d *t, float *x, const float *text, int seq, int n,
                                     int hw) {
    const size_t mark = nn_mark(c);
    diffuse_status st = tf_run(c, t, x, text, seq, n, hw);
    nn_release(c, mark);
    return st;
}
