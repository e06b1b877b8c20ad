/*
 * generate.c - text to image, as diffusers' StableDiffusionPipeline: encode
 * [negative, prompt], start from torch-identical noise (image i from seed
 * + i), run the sampler with classifier-free guidance (and guidance_rescale),
 * decode with the VAE. Images are denoised one at a time: the networks treat
 * batch entries independently, so this equals diffusers' batched run while
 * keeping memory to one image.
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

/* Sizes and buffers of one call. Latent-sized host buffers hold the
 * sampler state; backend buffers (from the arena) feed the networks. */
typedef struct gen_plan {
    const diffuse_generate_params *p;
    int cfg;              /* guidance_scale > 1 */
    int lc, h, w;         /* latent channels and size */
    int width, height;    /* pixels */
    size_t numel;         /* lc * h * w */
    pipe_text text;       /* (1 + cfg, S, C) embeddings, backend */
    float *unet_in;       /* (1 + cfg, lc, h, w) backend */
    float *unet_out;      /* (1 + cfg, lc, h, w) backend */
    float *x;             /* (lc, h, w) host: the sample */
    float *eps;           /* (1 + cfg, lc, h, w) host: model outputs */
    float *rgb;           /* (3, H, W) host: decoded image */
    int vae_tile;         /* 0: decode whole; else latent tile side */
} gen_plan;

size_t pipe_generate_arena_bytes(const df_run *r, int cfg, int height, int width, int *vae_tile) {
    const diffuse_model *m = r->model;
    const int b = 1 + cfg, f = (int)m->dims.vae_scale_factor;
    const size_t numel = (size_t)m->dims.latent_channels * (height / f) * (width / f);
    const size_t text = (size_t)b * m->text_net->cfg.max_positions * m->text_net->cfg.hidden * sizeof(float);
    const size_t lat = (size_t)b * numel * sizeof(float);
    size_t work = pipe_text_workspace_bytes(m, b);
    size_t unet = unet_workspace_bytes(m->unet_net, b, height / f, width / f, m->text_net->cfg.max_positions);
    size_t vae;
    pipe_plan_decode(r, text + 2 * lat, width, height, vae_tile, &vae);
    if (!unet || !vae) return 0;
    /* the decode runs above the embeddings and UNet buffers, with its latents and output */
    const size_t decode = vae + (numel + (size_t)3 * width * height) * sizeof(float) + 2 * 64;
    if (unet > work) work = unet;
    if (decode > work) work = decode;
    return text + 2 * lat + 3 * 64 + work;
}

static diffuse_status gen_reserve(df_run *r, gen_plan *g) {
    const size_t bytes = pipe_generate_arena_bytes(r, g->cfg, g->height, g->width, &g->vae_tile);
    if (!bytes)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "size %dx%d is too small for this model", g->width,
                       g->height);
    return pipe_reserve(r, bytes);
}

/* One sampler run for image @k: writes the final latents into g->x. */
static diffuse_status gen_denoise(df_run *r, gen_plan *g, uint64_t seed) {
    const diffuse_model *m = r->model;
    const bk_ops *o = r->bk->ops;
    sched *s = NULL;
    df_rng rng;
    df_rng_init(&rng, seed);
    diffuse_status st = sched_create(m->scheduler_config, g->p->sampler, (int)g->p->steps, g->numel, &s, r->err);
    if (st != DIFFUSE_OK) return df_fail_prefix(r->err, "sampler: ");
    df_rng_randn(&rng, g->x, g->numel);
    const float sigma0 = sched_init_noise_sigma(s);
    for (size_t i = 0; i < g->numel; i++) g->x[i] *= sigma0;

    const size_t n_evals = sched_num_evals(s), bytes = g->numel * sizeof(float);
    pipe_set_latents(r, g->x, g->lc, g->h, g->w); /* previews (diffuse_ctx_set_preview) */
    const int b = 1 + g->cfg;
    for (size_t i = 0; i < n_evals && st == DIFFUSE_OK; i++) {
        st = sched_scale_model_input(s, i, g->x, g->eps, r->err);
        for (int k = 0; k < b && st == DIFFUSE_OK; k++) st = o->upload(r->bk, g->unet_in + k * g->numel, g->eps, bytes);
        if (st == DIFFUSE_OK)
            st = pipe_unet_eval(r, &g->text, g->unet_in, g->unet_out, b, g->h, g->w, (float)sched_timestep(s, i),
                                g->p->guidance_scale, g->numel, g->eps);
        /* after the combine, eps holds the guided prediction and eps + numel still the conditional one */
        if (st == DIFFUSE_OK && g->cfg && g->p->guidance_rescale > 0.0f)
            st = guidance_rescale(g->eps, g->eps + g->numel, 1, g->numel, g->p->guidance_rescale, r->err);
        if (st == DIFFUSE_OK) st = pipe_preview_x0(r, s, i, i + 1, n_evals, g->x, g->eps);
        if (st == DIFFUSE_OK) st = sched_step(s, i, g->eps, g->x, &rng, 1, g->x, r->err);
        if (st == DIFFUSE_OK) st = pipe_progress(r, DIFFUSE_STAGE_DENOISE, (uint32_t)(i + 1), (uint32_t)n_evals);
    }
    pipe_set_latents(r, NULL, 0, 0, 0);
    sched_free(s);
    return st;
}

/* Sizes, host buffers and the arena for a call. */
static diffuse_status gen_plan_init(df_run *r, const diffuse_generate_params *p, gen_plan *g) {
    const diffuse_model *m = r->model;
    const int f = (int)m->dims.vae_scale_factor;
    memset(g, 0, sizeof *g);
    g->p = p;
    g->cfg = p->guidance_scale > 1.0f;
    g->width = p->width ? (int)p->width : (int)m->dims.unet_sample_size * f;
    g->height = p->height ? (int)p->height : (int)m->dims.unet_sample_size * f;
    if (g->width % f || g->height % f)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "size %dx%d: this model needs multiples of %d", g->width,
                       g->height, f);
    g->lc = (int)m->dims.latent_channels;
    g->h = g->height / f;
    g->w = g->width / f;
    g->numel = (size_t)g->lc * g->h * g->w;
    const int b = 1 + g->cfg;
    g->x = malloc(g->numel * sizeof(float));
    g->eps = malloc((size_t)b * g->numel * sizeof(float));
    g->rgb = malloc((size_t)3 * g->width * g->height * sizeof(float));
    if (!g->x || !g->eps || !g->rgb) return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for latents");
    return gen_reserve(r, g);
}

static void gen_plan_free(gen_plan *g) {
    free(g->x);
    free(g->eps);
    free(g->rgb);
}

diffuse_status pipe_generate(df_run *r, const diffuse_generate_params *p, diffuse_images **out) {
    gen_plan g;
    diffuse_images *images = NULL;
    r->bk->seamless_x = p->tile_x != 0; /* circular convolutions for this run (api.c resets them) */
    r->bk->seamless_y = p->tile_y != 0;
    diffuse_status st = gen_plan_init(r, p, &g);
    r->decode_tile = g.vae_tile;
    if (st == DIFFUSE_OK)
        st = pipe_images_alloc(r, p->n_images, (uint32_t)g.width, (uint32_t)g.height, &p->output, p->output_images,
                               p->seed, &images);
    const int b = 1 + g.cfg;
    const size_t base = bk_mark(r->bk);
    if (st == DIFFUSE_OK) {
        const clip_text_config *tc = &r->model->text_net->cfg;
        g.text.emb = bk_alloc(r->bk, (size_t)b * tc->max_positions * tc->hidden * sizeof(float));
        g.unet_in = g.text.emb ? bk_alloc(r->bk, (size_t)b * g.numel * sizeof(float)) : NULL;
        g.unet_out = g.unet_in ? bk_alloc(r->bk, (size_t)b * g.numel * sizeof(float)) : NULL;
        if (!g.unet_out) st = df_fail(r->err, r->bk->err.status, "%s", r->bk->err.msg);
    }
    if (st == DIFFUSE_OK) st = pipe_encode_prompts(r, p->prompt, p->negative_prompt, g.cfg, p->clip_skip, &g.text);
    for (uint32_t i = 0; st == DIFFUSE_OK && i < p->n_images; i++) {
        r->image_index = i;
        st = gen_denoise(r, &g, p->seed + i);
        if (st == DIFFUSE_OK) st = pipe_vae_decode(r, g.x, g.h, g.w, g.vae_tile, g.rgb, &images->images[i]);
    }
    bk_release(r->bk, base);
    gen_plan_free(&g);
    if (st != DIFFUSE_OK) {
        diffuse_images_free(images);
        return st;
    }
    *out = images;
    return DIFFUSE_OK;
}
