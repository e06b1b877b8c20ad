/*
 * pipe.c - what the pipelines share: progress/cancel reporting, prompt
 * encoding for classifier-free guidance, the arena reservation, and the
 * conversions between 8-bit images and [-1, 1] float tensors that diffusers'
 * VaeImageProcessor performs.
 */
#include "pipe/pipe.h"

#include "sched/sched.h"

#include "nets/unet.h"
#include "nets/vae.h"
#include "sched/guidance.h"
#include "sched/rng.h"
#include "text/clip_text.h"
#include "text/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Projects the sample to a (lat_h x lat_w) RGB8 image and hands it to the
 * host's preview callback. */
static diffuse_status pipe_preview(df_run *r, const diffuse_progress *p) {
    const int c = r->lat_c, h = r->lat_h, w = r->lat_w;
    const size_t hw = (size_t)h * w;
    uint8_t *px = malloc(hw * 3);
    if (!px) return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for a preview");
    const float *W = r->preview_proj;
    for (size_t i = 0; i < hw; i++) {
        for (int k = 0; k < 3; k++) {
            float v = W[(size_t)c * 3 + k];
            for (int l = 0; l < c; l++) v += W[(size_t)l * 3 + k] * r->latents[(size_t)l * hw + i];
            v = v / 2.0f + 0.5f;
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            px[i * 3 + k] = (uint8_t)(v * 255.0f + 0.5f);
        }
    }
    diffuse_image img = {(uint32_t)w, (uint32_t)h, (uint32_t)w * 3, DIFFUSE_PIXEL_RGB8, DIFFUSE_ORIGIN_TOP_LEFT,
                         DIFFUSE_COLOR_SRGB, px};
    r->preview_fn(&img, p, r->preview_user);
    free(px);
    return DIFFUSE_OK;
}

diffuse_status pipe_fit_preview(const diffuse_model *m, bk_backend *bk, float *proj, df_error *err) {
    const vae_model *v = m->vae_net;
    const int L = (int)m->dims.latent_channels, f = (int)m->dims.vae_scale_factor, n = PIPE_PREVIEW_FIT_N;
    const int lh = 8, lw = 8, H = lh * f, Wd = lw * f;
    const size_t lat = (size_t)n * L * lh * lw, pix = (size_t)n * 3 * H * Wd;
    if (L < 1 || L > 16 || f < 1)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "preview: %d latent channels, scale %d not supported", L, f);
    const size_t need = vae_workspace_bytes(v, VAE_DECODE, n, H, Wd) + (lat + pix) * sizeof(float) + 4096;
    diffuse_status st = bk->ops->arena_reserve(bk, need);
    if (st != DIFFUSE_OK) return df_fail(err, st, "preview fit: reserving working memory: %s", bk->err.msg);
    float *hz = malloc(lat * sizeof(float)), *hrgb = malloc(pix * sizeof(float));
    if (!hz || !hrgb) {
        free(hz);
        free(hrgb);
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "preview fit: out of memory");
    }
    df_rng rng;
    df_rng_init(&rng, 0x70726576u); /* fixed: the fit is deterministic */
    df_rng_randn(&rng, hz, lat);
    /* Latent b has standard deviation 2^b: samples range from the trained
     * latents' scale (about 1) to the larger ones of early or unusual runs. */
    for (int b = 0; b < n; b++)
        for (size_t i = 0; i < lat / n; i++) hz[(size_t)b * (lat / n) + i] *= (float)(1 << b);
    const size_t mark = bk_mark(bk);
    float *z = bk_alloc(bk, lat * sizeof(float));
    float *out = z ? bk_alloc(bk, pix * sizeof(float)) : NULL;
    if (!out) st = df_fail(err, bk->err.status, "preview fit: %s", bk->err.msg);
    if (st == DIFFUSE_OK) st = bk->ops->upload(bk, z, hz, lat * sizeof(float));
    if (st == DIFFUSE_OK) {
        st = vae_decode(v, bk, z, n, lh, lw, out);
        if (st != DIFFUSE_OK) st = df_fail(err, st, "preview fit: VAE decode: %s", bk->err.msg);
    }
    if (st == DIFFUSE_OK) st = bk->ops->download(bk, hrgb, out, pix * sizeof(float));
    bk_release(bk, mark);
    if (st == DIFFUSE_OK) {
        /* Normal equations (A^T A) X = A^T Y, A rows [z, 1], Y the block means. */
        const int K = L + 1;
        double ata[17 * 17] = {0}, aty[17 * 3] = {0};
        for (int b = 0; b < n; b++)
            for (int y = 0; y < lh; y++)
                for (int x = 0; x < lw; x++) {
                    double a[17], t[3] = {0, 0, 0};
                    for (int l = 0; l < L; l++) a[l] = hz[(((size_t)b * L + l) * lh + y) * lw + x];
                    a[L] = 1.0;
                    for (int k = 0; k < 3; k++) {
                        const float *ch = hrgb + ((size_t)b * 3 + k) * H * Wd;
                        for (int dy = 0; dy < f; dy++)
                            for (int dx = 0; dx < f; dx++) t[k] += ch[(size_t)(y * f + dy) * Wd + x * f + dx];
                        t[k] /= (double)f * f;
                    }
                    for (int i = 0; i < K; i++) {
                        for (int j = 0; j < K; j++) ata[i * K + j] += a[i] * a[j];
                        for (int k = 0; k < 3; k++) aty[i * 3 + k] += a[i] * t[k];
                    }
                }
        for (int i = 0; i < K; i++) ata[i * K + i] += 1e-6; /* ridge: never singular */
        /* Gauss-Jordan with partial pivoting. */
        for (int c = 0; c < K; c++) {
            int piv = c;
            for (int i = c + 1; i < K; i++)
                if (fabs(ata[i * K + c]) > fabs(ata[piv * K + c])) piv = i;
            for (int j = 0; j < K; j++) {
                double tmp = ata[c * K + j];
                ata[c * K + j] = ata[piv * K + j];
                ata[piv * K + j] = tmp;
            }
            for (int k = 0; k < 3; k++) {
                double tmp = aty[c * 3 + k];
                aty[c * 3 + k] = aty[piv * 3 + k];
                aty[piv * 3 + k] = tmp;
            }
            const double d = ata[c * K + c];
            for (int i = 0; i < K; i++) {
                if (i == c) continue;
                const double q = ata[i * K + c] / d;
                for (int j = 0; j < K; j++) ata[i * K + j] -= q * ata[c * K + j];
                for (int k = 0; k < 3; k++) aty[i * 3 + k] -= q * aty[c * 3 + k];
            }
        }
        for (int i = 0; i < K; i++)
            for (int k = 0; k < 3; k++) proj[i * 3 + k] = (float)(aty[i * 3 + k] / ata[i * K + i]);
    }
    free(hz);
    free(hrgb);
    return st;
}

static diffuse_status decode_core(df_run *r, const float *x, int h, int w, int tile, float *rgb, diffuse_image *img);

/* The preview as a VAE decode of r->preview_x0, at the output size. */
static diffuse_status pipe_preview_decoded(df_run *r, const diffuse_progress *p) {
    const int f = (int)r->model->dims.vae_scale_factor;
    const uint32_t W = (uint32_t)(r->lat_w * f), H = (uint32_t)(r->lat_h * f);
    float *rgb = malloc((size_t)3 * W * H * sizeof(float));
    uint8_t *px = malloc((size_t)3 * W * H);
    diffuse_status st = DIFFUSE_OK;
    if (!rgb || !px) st = df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for a decoded preview");
    diffuse_image img = {W, H, W * 3, DIFFUSE_PIXEL_RGB8, DIFFUSE_ORIGIN_TOP_LEFT, DIFFUSE_COLOR_SRGB, px};
    if (st == DIFFUSE_OK) st = decode_core(r, r->preview_x0, r->lat_h, r->lat_w, r->decode_tile, rgb, &img);
    if (st == DIFFUSE_OK) r->preview_fn(&img, p, r->preview_user);
    r->preview_x0_ready = 0;
    free(rgb);
    free(px);
    return st;
}

diffuse_status pipe_preview_x0(df_run *r, const struct sched *s, size_t i, size_t step, size_t total, const float *x,
                               const float *eps) {
    if (!r->preview_fn || !r->preview_decode_every || !r->latents || r->preview_every == 0) return DIFFUSE_OK;
    const int due = step % r->preview_every == 0 || step == total;
    if (!due || (step % r->preview_decode_every != 0 && step != total)) return DIFFUSE_OK;
    const size_t numel = (size_t)r->lat_c * r->lat_h * r->lat_w;
    if (!r->preview_x0 && !(r->preview_x0 = malloc(numel * sizeof(float))))
        return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for a decoded preview");
    diffuse_status st = sched_predict_x0(s, i, x, eps, r->preview_x0, r->err);
    r->preview_x0_ready = st == DIFFUSE_OK;
    return st;
}

void pipe_run_cleanup(df_run *r) {
    free(r->preview_x0);
    r->preview_x0 = NULL;
    r->preview_x0_ready = 0;
}

diffuse_status pipe_progress(df_run *r, diffuse_stage stage, uint32_t step, uint32_t total) {
    if (!r->progress_fn && !r->observe && !r->cancel && !r->preview_fn) return DIFFUSE_OK;
    diffuse_progress p = {sizeof p, stage, step, total, r->image_index, r->image_count, df_now() - r->t_start};
    if (r->observe) r->observe(r->observe_user, &p);
    if (r->preview_fn && r->latents && stage == DIFFUSE_STAGE_DENOISE && step > 0 &&
        (step % r->preview_every == 0 || step == total)) {
        diffuse_status s = r->preview_x0_ready ? pipe_preview_decoded(r, &p) : pipe_preview(r, &p);
        if (s != DIFFUSE_OK) return s;
    }
    if (r->cancel && atomic_load_explicit(r->cancel, memory_order_acquire))
        return df_fail(r->err, DIFFUSE_CANCELLED, "cancelled by diffuse_job_cancel (image %u of %u, stage %d, step %u/%u)",
                       r->image_index + 1, r->image_count, (int)stage, step, total);
    if (!r->progress_fn) return DIFFUSE_OK;
    if (r->progress_fn(&p, r->progress_user) != 0)
        return df_fail(r->err, DIFFUSE_CANCELLED, "cancelled by the progress callback (image %u of %u, stage %d, step %u/%u)",
                       r->image_index + 1, r->image_count, (int)stage, step, total);
    return DIFFUSE_OK;
}

diffuse_status pipe_reserve(df_run *r, size_t bytes) {
    if (r->memory_budget && bytes > r->memory_budget && r->budget_weights)
        return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY,
                       "this run needs %zu MiB of device working memory; the context's memory_budget leaves %llu MiB "
                       "beside the weights' %llu MiB",
                       (bytes + (1u << 20) - 1) >> 20, (unsigned long long)(r->memory_budget >> 20),
                       (unsigned long long)((r->budget_weights + (1u << 20) - 1) >> 20));
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
    /* Seamless output decodes whole: blended tiles would not wrap around. */
    if (fixed + *bytes <= limit || (r->bk && (r->bk->seamless_x || r->bk->seamless_y))) return;
    const int t = v->cfg.sample_size / v->cfg.scale; /* diffusers' tile_latent_min_size */
    if (t <= 0 || (width / v->cfg.scale <= t && height / v->cfg.scale <= t)) return;
    *tile = t;
    *bytes = vae_tiled_workspace_bytes(v, VAE_DECODE, 1, height, width, t);
}

/* ------------------------------------------------------------------------ */
/* Network calls on host buffers (every pipeline)                            */
/* ------------------------------------------------------------------------ */

diffuse_status pipe_vae_encode(df_run *r, const float *chw, int height, int width, int tile, float *moments) {
    const bk_ops *o = r->bk->ops;
    const vae_model *vae = r->model->vae_net;
    const int f = vae->cfg.scale, h = height / f, w = width / f;
    const size_t pix = (size_t)3 * height * width, mom = (size_t)2 * vae->cfg.latent_channels * h * w;
    const size_t mark = bk_mark(r->bk);
    diffuse_status st = DIFFUSE_OK;
    float *img = bk_alloc(r->bk, pix * sizeof(float));
    float *out = img ? bk_alloc(r->bk, mom * sizeof(float)) : NULL;
    if (!out) st = df_fail(r->err, r->bk->err.status, "VAE encode: %s", r->bk->err.msg);
    if (st == DIFFUSE_OK) st = o->upload(r->bk, img, chw, pix * sizeof(float));
    if (st == DIFFUSE_OK) {
        st = tile ? vae_encode_tiled(vae, r->bk, img, 1, height, width, tile, out)
                  : vae_encode(vae, r->bk, img, 1, height, width, out);
        if (st != DIFFUSE_OK) st = df_fail(r->err, st, "VAE encode: %s", r->bk->err.msg);
    }
    if (st == DIFFUSE_OK) st = o->download(r->bk, moments, out, mom * sizeof(float));
    bk_release(r->bk, mark);
    return st;
}

diffuse_status pipe_unet_eval(df_run *r, const pipe_text *text, const float *unet_in, float *unet_out, int b,
                              int h, int w, float t, float guidance, size_t numel, float *eps) {
    const float ts[2] = {t, t};
    diffuse_status st = unet_forward(r->model->unet_net, r->bk, unet_in, b, h, w, ts, text->emb, text->seq, unet_out);
    if (st != DIFFUSE_OK) return df_fail(r->err, st, "UNet: %s", r->bk->err.msg);
    st = r->bk->ops->download(r->bk, eps, unet_out, (size_t)b * numel * sizeof(float));
    if (st != DIFFUSE_OK) return df_fail(r->err, st, "UNet output: %s", r->bk->err.msg);
    if (b == 2) guidance_cfg_combine(eps, eps + numel, guidance, numel, eps);
    return DIFFUSE_OK;
}

diffuse_status pipe_vae_decode(df_run *r, const float *x, int h, int w, int tile, float *rgb, diffuse_image *img) {
    diffuse_status st = pipe_progress(r, DIFFUSE_STAGE_DECODE, 0, 1);
    if (st == DIFFUSE_OK) st = decode_core(r, x, h, w, tile, rgb, img);
    if (st == DIFFUSE_OK) st = pipe_progress(r, DIFFUSE_STAGE_DECODE, 1, 1);
    return st;
}

/* pipe_vae_decode without progress reports (also the decoded previews'). */
static diffuse_status decode_core(df_run *r, const float *x, int h, int w, int tile, float *rgb, diffuse_image *img) {
    const bk_ops *o = r->bk->ops;
    const vae_model *vae = r->model->vae_net;
    const size_t numel = (size_t)vae->cfg.latent_channels * h * w;
    const size_t pix = (size_t)3 * img->width * img->height;
    diffuse_status st = DIFFUSE_OK;
    const size_t mark = bk_mark(r->bk);
    float *z = st == DIFFUSE_OK ? bk_alloc(r->bk, numel * sizeof(float)) : NULL;
    float *out = z ? bk_alloc(r->bk, pix * sizeof(float)) : NULL;
    if (st == DIFFUSE_OK && !out) st = df_fail(r->err, r->bk->err.status, "VAE decode: %s", r->bk->err.msg);
    if (st == DIFFUSE_OK) st = o->upload(r->bk, z, x, numel * sizeof(float));
    if (st == DIFFUSE_OK) {
        st = tile ? vae_decode_tiled(vae, r->bk, z, 1, h, w, tile, out) : vae_decode(vae, r->bk, z, 1, h, w, out);
        if (st != DIFFUSE_OK) st = df_fail(r->err, st, "VAE decode: %s", r->bk->err.msg);
    }
    if (st == DIFFUSE_OK) st = o->download(r->bk, rgb, out, pix * sizeof(float));
    bk_release(r->bk, mark);
    if (st == DIFFUSE_OK) pipe_store_image(rgb, img);
    return st;
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

/* Checks a caller-supplied output image against the call's size. */
static diffuse_status check_into(df_run *r, uint32_t i, const diffuse_image *x, uint32_t w, uint32_t h) {
    if ((unsigned)x->format > DIFFUSE_PIXEL_BGRA8 || (unsigned)x->origin > DIFFUSE_ORIGIN_BOTTOM_LEFT ||
        (unsigned)x->color_space > DIFFUSE_COLOR_LINEAR)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "output_images[%u]: format, origin or color_space out "
                       "of range", i);
    if (x->width != w || x->height != h)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "output_images[%u] is %ux%u; the output is %ux%u", i,
                       x->width, x->height, w, h);
    if (!x->data) return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "output_images[%u].data is NULL", i);
    if ((uint64_t)x->stride < (uint64_t)w * (uint64_t)df_bytes_per_pixel(x->format))
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "output_images[%u].stride %u is below width * %d", i,
                       x->stride, df_bytes_per_pixel(x->format));
    return DIFFUSE_OK;
}

diffuse_status pipe_images_alloc(df_run *r, uint32_t n, uint32_t w, uint32_t h, const diffuse_output_format *fmt,
                                 diffuse_image *into, uint64_t seed, diffuse_images **out) {
    for (uint32_t i = 0; into && i < n; i++) {
        diffuse_status st = check_into(r, i, &into[i], w, h);
        if (st != DIFFUSE_OK) return st;
    }
    df_images *priv = calloc(1, sizeof *priv);
    diffuse_images *im = priv ? &priv->pub : NULL;
    if (im) {
        priv->caller_pixels = into != NULL;
        im->images = calloc(n, sizeof *im->images);
        im->seeds = calloc(n, sizeof *im->seeds);
    }
    if (!im || !im->images || !im->seeds) goto oom;
    im->count = n;
    for (uint32_t i = 0; i < n; i++) {
        diffuse_image *x = &im->images[i];
        im->seeds[i] = seed + i;
        if (into) {
            *x = into[i];
            continue;
        }
        x->width = w;
        x->height = h;
        x->stride = w * (uint32_t)df_bytes_per_pixel(fmt->format);
        x->format = fmt->format;
        x->origin = fmt->origin;
        x->color_space = fmt->color_space;
        x->data = calloc((size_t)x->stride * h, 1);
        if (!x->data) goto oom;
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
    const int bpp = df_bytes_per_pixel(img->format);
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
    const int bpp = df_bytes_per_pixel(img->format);
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
