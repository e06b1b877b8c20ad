/*
 * unet.c - UNet2DConditionModel: weight lookup for every block the config
 * describes, and the forward pass (time embedding, conv_in, down blocks with
 * their skip stack, mid block, up blocks with skip concatenation, conv_out)
 * on the backend ops. unet_workspace_bytes walks the same forward in
 * planning mode to size the arena.
 *
 * Arena layout of a pass (bottom to top): silu(temb) (B, T); two ping-pong
 * maps for the mid/up path; the skip stack, whose entries the down path
 * allocates in order and the up path pops (each pop releases that skip and
 * everything above it); per-block temporaries, released after each block.
 */
#include "nets/unet.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

/* Allocates @n resnets and, when @attn, @n transformers. */
static diffuse_status unet_alloc_block(int n, int attn, resnet_block **res, transformer2d **tf, df_error *err) {
    *res = calloc((size_t)n, sizeof **res);
    *tf = attn ? calloc((size_t)n, sizeof **tf) : NULL;
    if (!*res || (attn && !*tf)) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "unet_load: out of memory");
    return DIFFUSE_OK;
}

static diffuse_status unet_load_down(const nn_source *s, unet_model *m, int i, int c_in, int *skip_ch, int *n_skips,
                                     df_error *err) {
    const unet_config *c = &m->cfg;
    unet_down_block *d = &m->down[i];
    const int c_out = c->block_out[i];
    d->n = c->layers[i];
    NN_TRY(unet_alloc_block(d->n, c->down_attn[i], &d->res, &d->attn, err));
    char base[128];
    for (int j = 0; j < d->n; j++) {
        snprintf(base, sizeof base, "down_blocks.%d.resnets.%d.", i, j);
        NN_TRY(resnet_block_load(s, base, j ? c_out : c_in, c_out, c->time_dim, c->groups, c->eps, 1.0f, &d->res[j],
                                 err));
        if (d->attn) {
            snprintf(base, sizeof base, "down_blocks.%d.attentions.%d.", i, j);
            NN_TRY(transformer2d_load(s, base, c_out, c->heads[i], c->cross_dim, c->tf_layers[i], c->groups,
                                      c->linear_proj, &d->attn[j], err));
        }
        skip_ch[(*n_skips)++] = c_out;
    }
    d->has_down = i < c->levels - 1;
    if (d->has_down) {
        snprintf(base, sizeof base, "down_blocks.%d.downsamplers.0.", i);
        NN_TRY(downsample2d_load(s, base, c_out, c->downsample_padding, &d->down, err));
        skip_ch[(*n_skips)++] = c_out;
    }
    return DIFFUSE_OK;
}

/* Up block @i (deepest first) with diffusers' channel bookkeeping; checks it
 * against the skips the down path leaves (@skip_ch, popped from the end). */
static diffuse_status unet_load_up(const nn_source *s, unet_model *m, int i, int *prev_ch, const int *skip_ch,
                                   int *n_skips, df_error *err) {
    const unet_config *c = &m->cfg;
    const int L = c->levels, lvl = L - 1 - i; /* level of this block's resolution */
    const int c_out = c->block_out[lvl], c_in = c->block_out[lvl > 0 ? lvl - 1 : 0];
    unet_up_block *u = &m->up[i];
    u->n = c->layers[lvl] + 1;
    NN_TRY(unet_alloc_block(u->n, c->up_attn[i], &u->res, &u->attn, err));
    char base[128];
    for (int j = 0; j < u->n; j++) {
        const int res_skip = j == u->n - 1 ? c_in : c_out, res_in = j == 0 ? *prev_ch : c_out;
        if (*n_skips == 0 || skip_ch[*n_skips - 1] != res_skip)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                           "unet/config.json: up_blocks.%d.resnets.%d expects a %d-channel skip the down blocks do not "
                           "produce (layers_per_block per level must match)", i, j, res_skip);
        (*n_skips)--;
        snprintf(base, sizeof base, "up_blocks.%d.resnets.%d.", i, j);
        NN_TRY(resnet_block_load(s, base, res_in + res_skip, c_out, c->time_dim, c->groups, c->eps, 1.0f, &u->res[j],
                                 err));
        if (u->attn) {
            snprintf(base, sizeof base, "up_blocks.%d.attentions.%d.", i, j);
            NN_TRY(transformer2d_load(s, base, c_out, c->heads[lvl], c->cross_dim, c->tf_layers[lvl], c->groups,
                                      c->linear_proj, &u->attn[j], err));
        }
    }
    u->has_up = i < L - 1;
    if (u->has_up) {
        snprintf(base, sizeof base, "up_blocks.%d.upsamplers.0.", i);
        NN_TRY(upsample2d_load(s, base, c_out, &u->up, err));
    }
    *prev_ch = c_out;
    return DIFFUSE_OK;
}

static diffuse_status unet_load_mid(const nn_source *s, unet_model *m, df_error *err) {
    const unet_config *c = &m->cfg;
    const int ch = c->block_out[c->levels - 1], T = c->time_dim;
    NN_TRY(resnet_block_load(s, "mid_block.resnets.0.", ch, ch, T, c->groups, c->eps, c->mid_scale, &m->mid_res[0],
                             err));
    NN_TRY(transformer2d_load(s, "mid_block.attentions.0.", ch, c->heads[c->levels - 1], c->cross_dim,
                              c->tf_layers[c->levels - 1], c->groups, c->linear_proj, &m->mid_attn, err));
    return resnet_block_load(s, "mid_block.resnets.1.", ch, ch, T, c->groups, c->eps, c->mid_scale, &m->mid_res[1],
                             err);
}

static diffuse_status unet_load_weights(const nn_source *s, unet_model *m, df_error *err) {
    const unet_config *c = &m->cfg;
    const int c0 = c->block_out[0], T = c->time_dim;
    NN_TRY(nn_conv_load(s, "conv_in", c0, c->in_channels, c->conv_in_kernel, 1, &m->conv_in, err));
    NN_TRY(nn_linear_load(s, "time_embedding.linear_1", T, c0, 1, 0, &m->time_lin1, err));
    NN_TRY(nn_linear_load(s, "time_embedding.linear_2", T, T, 1, 0, &m->time_lin2, err));
    int skip_ch[1 + UNET_MAX_LEVELS * 65], n_skips = 0; /* channels of the skip stack */
    skip_ch[n_skips++] = c0;
    for (int i = 0, c_in = c0; i < c->levels; c_in = c->block_out[i], i++)
        NN_TRY(unet_load_down(s, m, i, c_in, skip_ch, &n_skips, err));
    if (c->mid_block) NN_TRY(unet_load_mid(s, m, err));
    for (int i = 0, prev = c->block_out[c->levels - 1]; i < c->levels; i++)
        NN_TRY(unet_load_up(s, m, i, &prev, skip_ch, &n_skips, err));
    NN_TRY(nn_norm_load(s, "conv_norm_out", c0, &m->norm_out, err));
    return nn_conv_load(s, "conv_out", c->out_channels, c0, c->conv_out_kernel, 1, &m->conv_out, err);
}

diffuse_status unet_load(const st_file *f, const char *prefix, const struct json_object *config, unet_model **out,
                         df_error *err) {
    *out = NULL;
    if (!f || !config) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "unet_load: no weights or config");
    unet_model *m = calloc(1, sizeof *m);
    if (!m) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "unet_load: out of memory");
    const nn_source src = {f, prefix ? prefix : "", "unet"};
    diffuse_status st = unet_read_config(config, &m->cfg, err);
    if (st == DIFFUSE_OK) st = unet_load_weights(&src, m, err);
    if (st != DIFFUSE_OK) {
        unet_free(m);
        return st;
    }
    *out = m;
    return DIFFUSE_OK;
}

static void unet_free_blocks(int n, resnet_block *res, transformer2d *tf) {
    for (int j = 0; tf && j < n; j++) transformer2d_free(&tf[j]);
    free(tf);
    free(res);
}

void unet_free(unet_model *m) {
    if (!m) return;
    for (int i = 0; i < UNET_MAX_LEVELS; i++) {
        unet_free_blocks(m->down[i].n, m->down[i].res, m->down[i].attn);
        unet_free_blocks(m->up[i].n, m->up[i].res, m->up[i].attn);
    }
    transformer2d_free(&m->mid_attn);
    free(m);
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

/* One skip connection: a map the down path made, and the arena mark below it. */
typedef struct unet_skip {
    float *x; /* (B, C, H, W) */
    int c, h, w;
    size_t mark;
} unet_skip;

/* The state of one pass. */
typedef struct unet_pass {
    const unet_model *m;
    nn_ctx *c;
    int B, S;
    const float *temb; /* (B, T) silu(time embedding) */
    const float *text; /* (B, S, Dc) */
    float *pp[2];      /* ping-pong maps of the mid/up path */
    unet_skip skip[1 + UNET_MAX_LEVELS * 65];
    int n_skips;
    int lh[UNET_MAX_LEVELS], lw[UNET_MAX_LEVELS]; /* latent size per level */
} unet_pass;

/* Allocates the next skip entry (B, C, H, W) on top of the arena. */
static unet_skip *unet_push(unet_pass *p, int ch, int h, int w) {
    unet_skip *s = &p->skip[p->n_skips];
    s->mark = nn_mark(p->c);
    if (!(s->x = nn_alloc(p->c, (size_t)p->B * ch * h * w))) return NULL;
    s->c = ch;
    s->h = h;
    s->w = w;
    p->n_skips++;
    return s;
}

/* Sizes per level; fails when a level would be empty. */
static int unet_level_sizes(const unet_model *m, int h, int w, int *lh, int *lw) {
    lh[0] = h;
    lw[0] = w;
    for (int i = 1; i < m->cfg.levels; i++) {
        downsample2d_out_size(&m->down[i - 1].down, lh[i - 1], lw[i - 1], &lh[i], &lw[i]);
        if (lh[i] < 1 || lw[i] < 1) return 1;
    }
    return 0;
}

/* Largest map the mid/up path holds as its current activation. */
static size_t unet_max_map(const unet_model *m, const unet_pass *p) {
    const unet_config *c = &m->cfg;
    const int L = c->levels;
    size_t best = (size_t)c->block_out[L - 1] * p->lh[L - 1] * p->lw[L - 1];
    for (int i = 0; i < L; i++) {
        const int lvl = L - 1 - i;
        size_t here = (size_t)c->block_out[lvl] * p->lh[lvl] * p->lw[lvl];
        if (here > best) best = here;
        if (lvl > 0 && (here = (size_t)c->block_out[lvl] * p->lh[lvl - 1] * p->lw[lvl - 1]) > best) best = here;
    }
    return best * (size_t)p->B;
}

/* out (B, T) = silu(linear_2(silu(linear_1(sinusoidal(t))))). */
static diffuse_status unet_time_embedding(unet_pass *p, const float *timesteps, float *out) {
    const unet_model *m = p->m;
    nn_ctx *c = p->c;
    const int c0 = m->cfg.block_out[0], T = m->cfg.time_dim;
    float *sinus, *hidden;
    NN_ALLOC(c, sinus, (size_t)p->B * c0); /* (B, C0) */
    NN_ALLOC(c, hidden, (size_t)p->B * T); /* (B, T) */
    const bk_timestep_args ta = {timesteps, sinus, p->B, c0, m->cfg.flip_sin_to_cos, m->cfg.freq_shift, 1.0f,
                                 10000.0f};
    NN_OP(c, c->bk->ops->timestep_embedding(c->bk, &ta));
    NN_TRY(nn_linear_forward(c, &m->time_lin1, sinus, hidden, p->B));
    NN_OP(c, c->bk->ops->unary(c->bk, BK_UNARY_SILU, hidden, hidden, (size_t)p->B * T));
    NN_TRY(nn_linear_forward(c, &m->time_lin2, hidden, out, p->B));
    NN_OP(c, c->bk->ops->unary(c->bk, BK_UNARY_SILU, out, out, (size_t)p->B * T));
    return DIFFUSE_OK;
}

/* x (B, C, H, W) = resnet(in); then the transformer in place when @tf. */
static diffuse_status unet_layer(unet_pass *p, const resnet_block *r, const transformer2d *tf, const float *in,
                                 float *x, int h, int w) {
    NN_TRY(resnet_block_forward(p->c, r, in, p->temb, x, p->B, h, w));
    if (tf) NN_TRY(transformer2d_forward(p->c, tf, x, p->text, p->S, p->B, h * w));
    return DIFFUSE_OK;
}

/* Down block @i: every layer's output and the downsampled map are pushed. */
static diffuse_status unet_down(unet_pass *p, int i) {
    const unet_down_block *d = &p->m->down[i];
    const int ch = p->m->cfg.block_out[i], h = p->lh[i], w = p->lw[i];
    for (int j = 0; j < d->n; j++) {
        const float *in = p->skip[p->n_skips - 1].x;
        unet_skip *s = unet_push(p, ch, h, w);
        if (!s) return nn_alloc_failed(p->c);
        NN_TRY(unet_layer(p, &d->res[j], d->attn ? &d->attn[j] : NULL, in, s->x, h, w));
    }
    if (!d->has_down) return DIFFUSE_OK;
    const float *in = p->skip[p->n_skips - 1].x;
    unet_skip *s = unet_push(p, ch, p->lh[i + 1], p->lw[i + 1]);
    if (!s) return nn_alloc_failed(p->c);
    return downsample2d_forward(p->c, &d->down, in, s->x, p->B, h, w);
}

/* Up block @i (deepest first) on *cur (B, *ch, H, W): pops one skip per
 * layer; each result lands in the other ping-pong map, which *cur then names,
 * and the upsampler targets the next skip's size (forward_upsample_size). */
static diffuse_status unet_up(unet_pass *p, int i, float **cur, int *ch) {
    const unet_up_block *u = &p->m->up[i];
    const int lvl = p->m->cfg.levels - 1 - i, c_out = p->m->cfg.block_out[lvl], h = p->lh[lvl], w = p->lw[lvl];
    nn_ctx *c = p->c;
    for (int j = 0; j < u->n; j++) {
        const unet_skip *s = &p->skip[--p->n_skips];
        float *cat, *dst = *cur == p->pp[0] ? p->pp[1] : p->pp[0];
        NN_ALLOC(c, cat, (size_t)p->B * (*ch + s->c) * h * w); /* (B, C + Cskip, H, W) = cat([x, skip]) */
        NN_OP(c, c->bk->ops->concat(c->bk, *cur, s->x, cat, p->B, *ch, s->c, h * w));
        NN_TRY(resnet_block_forward(c, &u->res[j], cat, p->temb, dst, p->B, h, w));
        nn_release(c, s->mark); /* the skip and cat are dead */
        if (u->attn) NN_TRY(transformer2d_forward(c, &u->attn[j], dst, p->text, p->S, p->B, h * w));
        *cur = dst;
        *ch = c_out;
    }
    if (!u->has_up) return DIFFUSE_OK;
    float *dst = *cur == p->pp[0] ? p->pp[1] : p->pp[0];
    NN_TRY(upsample2d_forward(c, &u->up, *cur, dst, p->B, h, w, p->lh[lvl - 1], p->lw[lvl - 1]));
    *cur = dst;
    return DIFFUSE_OK;
}

/* Everything after the time embedding: conv_in, down, mid, up, conv_out. */
static diffuse_status unet_body(unet_pass *p, const float *sample, float *out) {
    const unet_model *m = p->m;
    const unet_config *cfg = &m->cfg;
    nn_ctx *c = p->c;
    const int L = cfg->levels, h = p->lh[0], w = p->lw[0];
    if (cfg->center_input_sample) { /* sample = 2 * sample - 1 */
        float *centered;
        NN_ALLOC(c, centered, (size_t)p->B * cfg->in_channels * h * w);
        NN_OP(c, c->bk->ops->scale(c->bk, sample, centered, (size_t)p->B * cfg->in_channels * h * w, 2.0f, -1.0f));
        sample = centered;
    }
    const unet_skip *s0 = unet_push(p, cfg->block_out[0], h, w);
    if (!s0) return nn_alloc_failed(c);
    NN_TRY(nn_conv_same(c, &m->conv_in, sample, s0->x, p->B, h, w));
    for (int i = 0; i < L; i++) NN_TRY(unet_down(p, i));
    float *cur = p->skip[p->n_skips - 1].x;
    int ch = cfg->block_out[L - 1];
    if (cfg->mid_block) {
        const int hl = p->lh[L - 1], wl = p->lw[L - 1];
        NN_TRY(unet_layer(p, &m->mid_res[0], &m->mid_attn, cur, p->pp[0], hl, wl));
        NN_TRY(resnet_block_forward(c, &m->mid_res[1], p->pp[0], p->temb, p->pp[1], p->B, hl, wl));
        cur = p->pp[1];
    }
    for (int i = 0; i < L; i++) NN_TRY(unet_up(p, i, &cur, &ch));
    NN_TRY(nn_group_norm(c, &m->norm_out, cur, cur, p->B, h * w, cfg->groups, cfg->eps, 1));
    return nn_conv_same(c, &m->conv_out, cur, out, p->B, h, w);
}

/* A whole pass (or its plan) for sizes already checked. */
static diffuse_status unet_run(unet_pass *p, const float *sample, const float *timesteps, float *out) {
    nn_ctx *c = p->c;
    float *temb;
    NN_ALLOC(c, temb, (size_t)p->B * p->m->cfg.time_dim);
    const size_t mark = nn_mark(c);
    diffuse_status st = unet_time_embedding(p, timesteps, temb);
    nn_release(c, mark);
    if (st != DIFFUSE_OK) return st;
    p->temb = temb;
    const size_t map = unet_max_map(p->m, p);
    NN_ALLOC(c, p->pp[0], map);
    NN_ALLOC(c, p->pp[1], map);
    return unet_body(p, sample, out);
}

/* Checks sizes and fills the per-level sizes of @p. */
static diffuse_status unet_pass_init(const unet_model *m, nn_ctx *c, int batch, int h, int w, int seq,
                                     unet_pass *p, df_error *err) {
    *p = (unet_pass){.m = m, .c = c, .B = batch, .S = seq};
    if (batch <= 0 || h <= 0 || w <= 0 || seq <= 0 || h > 32768 || w > 32768 || seq > 65536 ||
        (long long)batch * h * w > INT_MAX / 16)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "unet: invalid sizes (batch %d, %dx%d latent, %d tokens)",
                       batch, h, w, seq);
    if (unet_level_sizes(m, h, w, p->lh, p->lw))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "unet: a %dx%d latent is too small for %d levels", h, w,
                       m->cfg.levels);
    return DIFFUSE_OK;
}

size_t unet_workspace_bytes(const unet_model *m, int batch, int h, int w, int seq) {
    if (!m) return 0;
    nn_ctx c = {.planning = 1};
    unet_pass p;
    df_error err;
    if (unet_pass_init(m, &c, batch, h, w, seq, &p, &err) != DIFFUSE_OK) return 0;
    static const float none[1];
    static float sink[1];
    if (unet_run(&p, none, none, sink) != DIFFUSE_OK) return 0;
    return c.peak + 64 /* alignment of the first allocation */ + BK_OP_SCRATCH_BYTES;
}

diffuse_status unet_forward(const unet_model *m, bk_backend *bk, const float *sample, int batch, int h, int w,
                            const float *timesteps, const float *text, int seq, float *out) {
    if (!bk) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (!m || !sample || !timesteps || !text || !out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "unet_forward: NULL %s",
                       !m ? "model" : !sample ? "sample" : !timesteps ? "timesteps" : !text ? "text" : "output");
    nn_ctx c = {.bk = bk};
    unet_pass p;
    NN_TRY(unet_pass_init(m, &c, batch, h, w, seq, &p, &bk->err));
    p.text = text;
    const size_t mark = bk_mark(bk);
    diffuse_status st = unet_run(&p, sample, timesteps, out);
    bk_release(bk, mark);
    return st;
}
