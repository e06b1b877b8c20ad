/*
 * variation.c - variations of an image, as diffusers'
 * StableDiffusionImg2ImgPipeline: the image is VAE-encoded once, and for
 * image i (seed + i) the posterior is sampled, noised to @strength and
 * denoised with the optional prompt. Also the image-to-image arena sizing and
 * CFG rule edit.c shares.
 */
#include "pipe/pipe.h"

#include "nets/unet.h"
#include "nets/vae.h"
#include "sched/guidance.h"
#include "sched/rng.h"
#include "sched/sched.h"
#include "text/clip_text.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Shared with edit.c                                                        */
/* ------------------------------------------------------------------------ */

int pipe_use_cfg(float guidance, const char *prompt, const char *negative) {
    const int empty = (!prompt || !*prompt) && (!negative || !*negative);
    return guidance > 1.0f && !empty;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Whole or tiled VAE encoding, by pipe_plan_decode's rule: tiles of the
 * config's sample_size pixels (diffusers' tile_sample_min_size) when the
 * whole pass does not fit the budget (or PIPE_VAE_UNTILED_MAX without one). */
static void plan_encode(const df_run *r, size_t fixed, int width, int height, int *tile, size_t *bytes) {
    const vae_model *v = r->model->vae_net;
    const size_t limit = r->memory_budget ? (size_t)r->memory_budget : PIPE_VAE_UNTILED_MAX + fixed;
    *tile = 0;
    *bytes = vae_workspace_bytes(v, VAE_ENCODE, 1, height, width);
    if (fixed + *bytes <= limit) return;
    const int t = v->cfg.sample_size;
    if (t <= 0 || t % (4 * v->cfg.scale) || (width <= t && height <= t)) return;
    *tile = t;
    *bytes = vae_tiled_workspace_bytes(v, VAE_ENCODE, 1, height, width, t);
}

size_t pipe_img2img_arena_bytes(const df_run *r, int b, int cin, int height, int width, int *enc_tile,
                                int *dec_tile) {
    const diffuse_model *m = r->model;
    const int f = (int)m->dims.vae_scale_factor, lc = (int)m->dims.latent_channels;
    const int seq = m->text_net->cfg.max_positions;
    const size_t hw = (size_t)(height / f) * (size_t)(width / f), pix = (size_t)height * width;
    const size_t text = (size_t)b * seq * m->text_net->cfg.hidden * sizeof(float);
    const size_t fixed = text + (size_t)b * (size_t)(cin + lc) * hw * sizeof(float) + 3 * 64;
    const size_t enc_io = (3 * pix + 2 * (size_t)lc * hw) * sizeof(float) + 2 * 64;
    const size_t dec_io = ((size_t)lc * hw + 3 * pix) * sizeof(float) + 2 * 64;
    size_t unet = unet_workspace_bytes(m->unet_net, b, height / f, width / f, seq), enc, dec;
    plan_encode(r, fixed + enc_io, width, height, enc_tile, &enc);
    pipe_plan_decode(r, fixed + dec_io, width, height, dec_tile, &dec);
    if (!unet || !enc || !dec) return 0;
    size_t work = max_size(max_size(pipe_text_workspace_bytes(m, b), unet), max_size(enc + enc_io, dec + dec_io));
    return fixed + work;
}

/* ------------------------------------------------------------------------ */
/* Variation                                                                 */
/* ------------------------------------------------------------------------ */

/* Sizes and buffers of one call: host buffers hold the sampler state,
 * backend buffers (from the arena) feed the UNet. */
typedef struct var_plan {
    const diffuse_variation_params *p;
    int cfg;              /* guidance runs (pipe_use_cfg) */
    int lc, h, w;         /* latent channels and size */
    int width, height;    /* pixels: the input image's size */
    size_t numel;         /* lc * h * w */
    pipe_text text;       /* (1 + cfg, S, C) embeddings, backend */
    float *unet_in;       /* (1 + cfg, lc, h, w) backend */
    float *unet_out;      /* (1 + cfg, lc, h, w) backend */
    float *moments;       /* (2 lc, h, w) host: the encoded image */
    float *x;             /* (lc, h, w) host: the sample */
    float *noise;         /* (lc, h, w) host: posterior noise, then add_noise's */
    float *eps;           /* (1 + cfg, lc, h, w) host: model outputs */
    float *rgb;           /* (3, H, W) host: input, then decoded image */
    int enc_tile, dec_tile; /* 0: whole VAE passes; else tile sides (pipe_img2img_arena_bytes) */
} var_plan;

/* Sizes, host buffers and the arena for a call. */
static diffuse_status var_plan_init(df_run *r, const diffuse_variation_params *p, var_plan *g) {
    const diffuse_model *m = r->model;
    const int f = (int)m->dims.vae_scale_factor;
    memset(g, 0, sizeof *g);
    g->p = p;
    g->cfg = pipe_use_cfg(p->guidance_scale, p->prompt, p->negative_prompt);
    g->width = (int)p->image->width;
    g->height = (int)p->image->height;
    if (g->width % f || g->height % f)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "image is %dx%d: this model needs sides that are multiples of %d (its VAE scale factor)",
                       g->width, g->height, f);
    g->lc = (int)m->dims.latent_channels;
    if (m->dims.unet_in_channels != g->lc)
        return df_fail(r->err, DIFFUSE_ERR_UNSUPPORTED,
                       "the UNet takes %d input channels (an inpainting model): variation needs a %d-channel "
                       "text-to-image UNet, as diffusers' img2img pipeline; use diffuse_edit with this model",
                       (int)m->dims.unet_in_channels, g->lc);
    g->h = g->height / f;
    g->w = g->width / f;
    g->numel = (size_t)g->lc * g->h * g->w;
    const int b = 1 + g->cfg;
    g->moments = malloc(2 * g->numel * sizeof(float));
    g->x = malloc(g->numel * sizeof(float));
    g->noise = malloc(g->numel * sizeof(float));
    g->eps = malloc((size_t)b * g->numel * sizeof(float));
    g->rgb = malloc((size_t)3 * g->width * g->height * sizeof(float));
    if (!g->moments || !g->x || !g->noise || !g->eps || !g->rgb)
        return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for %dx%d latents", g->w, g->h);
    const size_t bytes = pipe_img2img_arena_bytes(r, b, g->lc, g->height, g->width, &g->enc_tile, &g->dec_tile);
    if (!bytes)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "image size %dx%d is too small for this model",
                       g->width, g->height);
    return pipe_reserve(r, bytes);
}

static void var_plan_free(var_plan *g) {
    free(g->moments);
    free(g->x);
    free(g->noise);
    free(g->eps);
    free(g->rgb);
}

/* The starting sample of image @seed, in diffusers' order of draws from its
 * generator: the posterior sample of the encoded image, then the noise that
 * add_noise mixes in at the first evaluation. */
static diffuse_status var_start(df_run *r, var_plan *g, sched *s, df_rng *rng, size_t *first) {
    diffuse_status st = sched_img2img_start(s, g->p->strength, first, r->err);
    if (st != DIFFUSE_OK) return df_fail_prefix(r->err, "sampler: ");
    df_rng_randn(rng, g->noise, g->numel);
    st = vae_posterior_latents(r->model->vae_net, g->moments, g->noise, 1, g->h, g->w, g->x, r->err);
    if (st != DIFFUSE_OK) return df_fail_prefix(r->err, "VAE posterior: ");
    df_rng_randn(rng, g->noise, g->numel);
    return sched_add_noise(s, *first, g->x, g->noise, g->x, r->err);
}

/* One sampler run for the image of @seed: writes the final latents into g->x. */
static diffuse_status var_denoise(df_run *r, var_plan *g, uint64_t seed) {
    const int b = 1 + g->cfg;
    const size_t bytes = g->numel * sizeof(float);
    sched *s = NULL;
    size_t first = 0;
    df_rng rng;
    df_rng_init(&rng, seed);
    diffuse_status st = sched_create(r->model->scheduler_config, g->p->sampler, (int)g->p->steps, g->numel, &s, r->err);
    if (st != DIFFUSE_OK) return df_fail_prefix(r->err, "sampler: ");
    st = var_start(r, g, s, &rng, &first);
    pipe_set_latents(r, g->x, g->lc, g->h, g->w); /* previews (diffuse_ctx_set_preview) */
    const size_t n_evals = sched_num_evals(s);
    for (size_t i = first; i < n_evals && st == DIFFUSE_OK; i++) {
        const float t = (float)sched_timestep(s, i);
        st = sched_scale_model_input(s, i, g->x, g->eps, r->err);
        for (int k = 0; k < b && st == DIFFUSE_OK; k++)
            st = r->bk->ops->upload(r->bk, g->unet_in + k * g->numel, g->eps, bytes);
        if (st == DIFFUSE_OK)
            st = pipe_unet_eval(r, &g->text, g->unet_in, g->unet_out, b, g->h, g->w, t, g->p->guidance_scale,
                                g->numel, g->eps);
        if (st == DIFFUSE_OK) st = pipe_preview_x0(r, s, i, i + 1 - first, n_evals - first, g->x, g->eps);
        if (st == DIFFUSE_OK) st = sched_step(s, i, g->eps, g->x, &rng, 1, g->x, r->err);
        if (st == DIFFUSE_OK)
            st = pipe_progress(r, DIFFUSE_STAGE_DENOISE, (uint32_t)(i + 1 - first), (uint32_t)(n_evals - first));
    }
    pipe_set_latents(r, NULL, 0, 0, 0);
    sched_free(s);
    return st;
}

/* Embeddings and UNet buffers from the arena, then the prompt and the image. */
static diffuse_status var_prepare(df_run *r, var_plan *g) {
    const clip_text_config *tc = &r->model->text_net->cfg;
    const int b = 1 + g->cfg;
    g->text.emb = bk_alloc(r->bk, (size_t)b * tc->max_positions * tc->hidden * sizeof(float));
    g->unet_in = g->text.emb ? bk_alloc(r->bk, (size_t)b * g->numel * sizeof(float)) : NULL;
    g->unet_out = g->unet_in ? bk_alloc(r->bk, (size_t)b * g->numel * sizeof(float)) : NULL;
    if (!g->unet_out) return df_fail(r->err, r->bk->err.status, "%s", r->bk->err.msg);
    diffuse_status st = pipe_encode_prompts(r, g->p->prompt ? g->p->prompt : "", g->p->negative_prompt, g->cfg, 0,
                                            &g->text);
    if (st == DIFFUSE_OK) st = pipe_progress(r, DIFFUSE_STAGE_ENCODE, 0, 1);
    if (st == DIFFUSE_OK) {
        pipe_load_image(g->p->image, g->rgb);
        st = pipe_vae_encode(r, g->rgb, g->height, g->width, g->enc_tile, g->moments);
    }
    if (st == DIFFUSE_OK) st = pipe_progress(r, DIFFUSE_STAGE_ENCODE, 1, 1);
    return st;
}

diffuse_status pipe_variation(df_run *r, const diffuse_variation_params *p, diffuse_images **out) {
    var_plan g;
    diffuse_images *images = NULL;
    diffuse_status st = var_plan_init(r, p, &g);
    r->decode_tile = g.dec_tile;
    if (st == DIFFUSE_OK)
        st = pipe_images_alloc(r, p->n_images, (uint32_t)g.width, (uint32_t)g.height, &p->output,
                               p->output_images, p->seed, &images);
    const size_t base = bk_mark(r->bk);
    if (st == DIFFUSE_OK) st = var_prepare(r, &g);
    for (uint32_t i = 0; st == DIFFUSE_OK && i < p->n_images; i++) {
        r->image_index = i;
        st = var_denoise(r, &g, p->seed + i);
        if (st == DIFFUSE_OK) st = pipe_vae_decode(r, g.x, g.h, g.w, g.dec_tile, g.rgb, &images->images[i]);
    }
    bk_release(r->bk, base);
    var_plan_free(&g);
    if (st != DIFFUSE_OK) {
        diffuse_images_free(images);
        return st;
    }
    *out = images;
    return DIFFUSE_OK;
}
