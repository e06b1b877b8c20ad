/*
 * pipe.c - what the pipelines share: progress/cancel reporting, prompt
 * encoding for classifier-free guidance, the arena reservation, and the
 * conversions between 8-bit images and [-1, 1] float tensors that diffusers'
 * VaeImageProcessor performs.
 */
#include "pipe/pipe.h"

#include "nets/vae.h"
#include "text/clip_text.h"
#include "text/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double pipe_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

diffuse_status pipe_progress(df_run *r, diffuse_stage stage, uint32_t step, uint32_t total) {
    if (!r->progress_fn) return DIFFUSE_OK;
    diffuse_progress p = {sizeof p, stage, step, total, r->image_index, r->image_count, pipe_now() - r->t_start};
    if (r->progress_fn(&p, r->progress_user) != 0)
        return df_fail(r->err, DIFFUSE_CANCELLED, "cancelled by the progress callback (image %u of %u, stage %d, step %u/%u)",
                       r->image_index + 1, r->image_count, (int)stage, step, total);
    return DIFFUSE_OK;
}

diffuse_status pipe_reserve(df_run *r, size_t bytes) {
    if (r->memory_budget && bytes > r->memory_budget)
        return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY,
                       "this run needs %zu MiB of working memory; the context's memory_budget is %llu MiB",
                       (bytes + (1u << 20) - 1) >> 20, (unsigned long long)(r->memory_budget >> 20));
    diffuse_status s = r->bk->ops->arena_reserve(r->bk, bytes);
    if (s != DIFFUSE_OK)
        return df_fail(r->err, s, "reserving %zu MiB of working memory: %s", bytes >> 20, r->bk->err.msg);
    return DIFFUSE_OK;
}

void pipe_plan_decode(const df_run *r, size_t fixed, int width, int height, int *tile, size_t *bytes) {
    const vae_model *v = r->model->vae_net;
    const size_t limit = r->memory_budget ? (size_t)r->memory_budget : PIPE_VAE_UNTILED_MAX + fixed;
    *tile = 0;
    *bytes = vae_workspace_bytes(v, VAE_DECODE, 1, height, width);
    if (fixed + *bytes <= limit) return;
    const int t = v->cfg.sample_size / v->cfg.scale; /* diffusers' tile_latent_min_size */
    if (t <= 0 || (width / v->cfg.scale <= t && height / v->cfg.scale <= t)) return;
    *tile = t;
    *bytes = vae_tiled_workspace_bytes(v, VAE_DECODE, 1, height, width, t);
}

/* ------------------------------------------------------------------------ */
/* Prompts                                                                   */
/* ------------------------------------------------------------------------ */

size_t pipe_text_workspace_bytes(const diffuse_model *m, int batch) {
    const clip_text_config *c = &m->text_net->cfg;
    (void)batch; /* prompts are encoded one at a time (clip_skip differs) */
    return clip_text_workspace_bytes(c, 1, c->max_positions);
}

/* ids (S) of @text padded/truncated as the pipelines call the tokenizer. */
static diffuse_status pipe_tokenize(df_run *r, const char *what, const char *text, int seq, int32_t *ids) {
    size_t dropped = 0;
    diffuse_status s = df_tokenize_padded(r->model->tokenizer, text, (size_t)seq, ids, &dropped, r->err);
    if (s != DIFFUSE_OK) return df_fail_prefix(r->err, "tokenizing the %s: ", what);
    if (dropped)
        df_log(r->log, DIFFUSE_LOG_WARN,
               "the %s is too long: %zu tokens beyond the %d the text encoder takes were dropped", what, dropped,
               seq);
    return DIFFUSE_OK;
}

static diffuse_status pipe_encode_one(df_run *r, const char *what, const char *text, uint32_t clip_skip,
                                      float *emb) {
    const clip_text_model *tm = r->model->text_net;
    const int seq = tm->cfg.max_positions;
    int32_t *ids = malloc((size_t)seq * sizeof *ids);
    if (!ids) return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory tokenizing the %s", what);
    diffuse_status s = pipe_tokenize(r, what, text, seq, ids);
    if (s == DIFFUSE_OK && clip_skip >= (uint32_t)tm->cfg.layers)
        s = df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "clip_skip %u: the text encoder has %d layers", clip_skip,
                    tm->cfg.layers);
    if (s == DIFFUSE_OK) {
        s = clip_text_forward(tm, r->bk, ids, 1, seq, (int)clip_skip, emb);
        if (s != DIFFUSE_OK) s = df_fail(r->err, s, "text encoder: %s", r->bk->err.msg);
    }
    free(ids);
    return s;
}

diffuse_status pipe_encode_prompts(df_run *r, const char *prompt, const char *negative, int cfg, uint32_t clip_skip,
                                   pipe_text *t) {
    const clip_text_config *c = &r->model->text_net->cfg;
    t->batch = cfg ? 2 : 1;
    t->seq = c->max_positions;
    t->width = c->hidden;
    const size_t one = (size_t)t->seq * t->width;
    diffuse_status s = pipe_progress(r, DIFFUSE_STAGE_TEXT, 0, 1);
    if (s == DIFFUSE_OK && cfg) /* the unconditional embedding ignores clip_skip, as in diffusers */
        s = pipe_encode_one(r, "negative prompt", negative ? negative : "", 0, t->emb);
    if (s == DIFFUSE_OK) s = pipe_encode_one(r, "prompt", prompt, clip_skip, t->emb + (cfg ? one : 0));
    if (s == DIFFUSE_OK) s = pipe_progress(r, DIFFUSE_STAGE_TEXT, 1, 1);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Images                                                                    */
/* ------------------------------------------------------------------------ */

static int bytes_per_pixel(diffuse_pixel_format f) { return f == DIFFUSE_PIXEL_RGB8 ? 3 : 4; }

diffuse_status pipe_images_alloc(df_run *r, uint32_t n, uint32_t w, uint32_t h, const diffuse_output_format *fmt,
                                 uint64_t seed, diffuse_images **out) {
    diffuse_images *im = calloc(1, sizeof *im);
    if (im) {
        im->images = calloc(n, sizeof *im->images);
        im->seeds = calloc(n, sizeof *im->seeds);
    }
    if (!im || !im->images || !im->seeds) goto oom;
    im->count = n;
    for (uint32_t i = 0; i < n; i++) {
        diffuse_image *x = &im->images[i];
        x->width = w;
        x->height = h;
        x->stride = w * (uint32_t)bytes_per_pixel(fmt->format);
        x->format = fmt->format;
        x->origin = fmt->origin;
        x->color_space = fmt->color_space;
        x->data = calloc((size_t)x->stride * h, 1);
        if (!x->data) goto oom;
        im->seeds[i] = seed + i;
    }
    *out = im;
    return DIFFUSE_OK;
oom:
    diffuse_images_free(im);
    return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory allocating %u images of %ux%u", n, w, h);
}

/* sRGB <-> linear light on [0, 1] (IEC 61966-2-1). */
static float srgb_to_linear(float v) { return v <= 0.04045f ? v / 12.92f : powf((v + 0.055f) / 1.055f, 2.4f); }
static float linear_to_srgb(float v) {
    return v <= 0.0031308f ? v * 12.92f : 1.055f * powf(v, 1.0f / 2.4f) - 0.055f;
}

void pipe_store_image(const float *chw, diffuse_image *img) {
    const size_t hw = (size_t)img->width * img->height;
    const int bpp = bytes_per_pixel(img->format);
    const int swap = img->format == DIFFUSE_PIXEL_BGRA8;
    for (uint32_t y = 0; y < img->height; y++) {
        const uint32_t row = img->origin == DIFFUSE_ORIGIN_BOTTOM_LEFT ? img->height - 1 - y : y;
        uint8_t *dst = img->data + (size_t)row * img->stride;
        for (uint32_t x = 0; x < img->width; x++, dst += bpp) {
            for (int c = 0; c < 3; c++) {
                float v = chw[(size_t)c * hw + (size_t)y * img->width + x] / 2.0f + 0.5f;
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                if (img->color_space == DIFFUSE_COLOR_LINEAR) v = srgb_to_linear(v);
                dst[swap ? 2 - c : c] = (uint8_t)nearbyintf(v * 255.0f); /* half to even, as numpy */
            }
            if (bpp == 4) dst[3] = 255;
        }
    }
}

void pipe_load_image(const diffuse_image *img, float *chw) {
    const size_t hw = (size_t)img->width * img->height;
    const int bpp = bytes_per_pixel(img->format);
    const int swap = img->format == DIFFUSE_PIXEL_BGRA8;
    for (uint32_t y = 0; y < img->height; y++) {
        const uint32_t row = img->origin == DIFFUSE_ORIGIN_BOTTOM_LEFT ? img->height - 1 - y : y;
        const uint8_t *src = img->data + (size_t)row * img->stride;
        for (uint32_t x = 0; x < img->width; x++, src += bpp) {
            for (int c = 0; c < 3; c++) {
                float v = (float)src[swap ? 2 - c : c] / 255.0f;
                if (img->color_space == DIFFUSE_COLOR_LINEAR) v = linear_to_srgb(v);
                chw[(size_t)c * hw + (size_t)y * img->width + x] = v * 2.0f - 1.0f;
            }
        }
    }
}
