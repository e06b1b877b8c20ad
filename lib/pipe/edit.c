/*
 * edit.c - repainting the masked part of an image, as diffusers'
 * StableDiffusionInpaintPipeline: 9-channel UNets get [latents, mask,
 * masked-image latents]; 4-channel UNets take its legacy path that blends
 * the noised image latents back outside the mask after every step. After
 * decoding, the pixels the mask keeps are pasted back from the input
 * (optionally with a feathered edge), so they come back unchanged.
 */
#include "pipe/pipe.h"

#include "nets/vae.h"
#include "sched/rng.h"
#include "sched/sched.h"
#include "text/clip_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sizes and buffers of one call. Host buffers hold the masks and sampler
 * state; backend buffers (from the arena) feed the UNet. */
typedef struct edit_plan {
    const diffuse_edit_params *p;
    int cfg;               /* guidance runs (pipe_use_cfg) */
    int cin;               /* UNet input channels: lc (legacy blending) or 2 lc + 1 */
    int need_image;        /* the image latents are used: 4 channels or strength < 1 */
    int lc, h, w;          /* latent channels and size */
    int width, height;     /* pixels: the input image's size */
    size_t hw, numel;      /* h * w, lc * h * w */
    pipe_text text;        /* (1 + cfg, S, C) embeddings, backend */
    float *unet_in;        /* (1 + cfg, cin, h, w) backend */
    float *unet_out;       /* (1 + cfg, lc, h, w) backend */
    uint8_t *edit;         /* (H, W) host: 1 = repaint (diffusers' binarised mask) */
    float *keep;           /* (H, W) host: weight of the input when pasting back */
    float *lmask;          /* (h, w) host: the mask at latent size */
    float *moments;        /* (2 lc, h, w) host: the masked image's posterior */
    float *image_latents;  /* (lc, h, w) host: the image's latents (need_image) */
    float *masked_latents; /* (lc, h, w) host: the masked image's latents (cin 9) */
    float *x, *noise, *tmp; /* (lc, h, w) host: sample, initial noise, scratch */
    float *eps;            /* (1 + cfg, lc, h, w) host: model outputs */
    float *rgb;            /* (3, H, W) host: input, masked input, decoded image */
    df_rng rng0;           /* the generator of seed + 0 (see edit_prepare) */
    int enc_tile, dec_tile; /* 0: whole VAE passes; else tile sides (pipe_img2img_arena_bytes) */
} edit_plan;

/* ------------------------------------------------------------------------ */
/* Masks and pasting back                                                    */
/* ------------------------------------------------------------------------ */

/* g->edit in top-left order: alpha 0 of the image when no mask is given,
 * else the mask's luminance (PIL's convert("L"), as diffusers' mask
 * processor computes it) >= 128, i.e. >= 0.5 after its / 255. */
static void edit_read_mask(edit_plan *g) {
    const diffuse_image *src = g->p->mask ? g->p->mask : g->p->image;
    const int bpp = df_bytes_per_pixel(src->format), swap = src->format == DIFFUSE_PIXEL_BGRA8;
    for (uint32_t y = 0; y < src->height; y++) {
        const uint32_t row = src->origin == DIFFUSE_ORIGIN_BOTTOM_LEFT ? src->height - 1 - y : y;
        const uint8_t *px = src->data + (size_t)row * src->stride;
        uint8_t *e = g->edit + (size_t)y * src->width;
        for (uint32_t x = 0; x < src->width; x++, px += bpp) {
            if (!g->p->mask) {
                e[x] = px[3] == 0;
                continue;
            }
            const uint32_t r = px[swap ? 2 : 0], gr = px[1], b = px[swap ? 0 : 2];
            e[x] = ((r * 19595u + gr * 38470u + b * 7471u + 0x8000u) >> 16) >= 128u;
        }
    }
}

/* Squared distance transform of one line (Felzenszwalb & Huttenlocher):
 * d[q] = min_v (q - v)^2 + f[v]. @v, @z: n and n + 1 scratch. */
static void edt_line(const float *f, size_t fs, int n, float *d, size_t ds, int *v, double *z) {
    int k = 0;
    v[0] = 0;
    z[0] = -HUGE_VAL;
    z[1] = HUGE_VAL;
    for (int q = 1; q < n; q++) {
        double s;
        for (;;) { /* ends at k = 0 at the latest: z[0] = -inf */
            const int p = v[k];
            s = (((double)f[(size_t)q * fs] + (double)q * q) - ((double)f[(size_t)p * fs] + (double)p * p)) /
                (2.0 * (q - p));
            if (s > z[k]) break;
            k--;
        }
        k++;
        v[k] = q;
        z[k] = s;
        z[k + 1] = HUGE_VAL;
    }
    k = 0;
    for (int q = 0; q < n; q++) {
        while (z[k + 1] < q) k++;
        const double dq = (double)(q - v[k]);
        d[(size_t)q * ds] = (float)(dq * dq + (double)f[(size_t)v[k] * fs]);
    }
}

/* g->keep: 0 where the mask repaints, 1 elsewhere; with a feather F > 0,
 * kept pixels at Euclidean distance d < F + 1 from the nearest repainted
 * pixel get d / (F + 1) (a linear ramp of F pixels). Distances are capped
 * at F + 1, which keeps the transform exact in float. */
static diffuse_status edit_keep_weights(df_run *r, edit_plan *g) {
    const int W = g->width, H = g->height, n = W > H ? W : H;
    const size_t pix = (size_t)W * H;
    const double F = g->p->mask_feather;
    for (size_t i = 0; i < pix; i++) g->keep[i] = g->edit[i] ? 0.0f : 1.0f;
    if (F <= 0.0) return DIFFUSE_OK;
    const float cap = (float)((F + 1.0) * (F + 1.0)) + 1.0f;
    float *f = malloc(pix * sizeof(float)), *line = malloc((size_t)n * sizeof(float));
    int *v = malloc((size_t)n * sizeof(int));
    double *z = malloc((size_t)(n + 1) * sizeof(double));
    if (!f || !line || !v || !z) {
        free(f), free(line), free(v), free(z);
        return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory feathering a %dx%d mask", W, H);
    }
    for (size_t i = 0; i < pix; i++) f[i] = g->edit[i] ? 0.0f : cap;
    for (int x = 0; x < W; x++) { /* columns, then rows */
        edt_line(f + x, (size_t)W, H, line, 1, v, z);
        for (int y = 0; y < H; y++) f[(size_t)y * W + x] = line[y];
    }
    for (int y = 0; y < H; y++) {
        edt_line(f + (size_t)y * W, 1, W, line, 1, v, z);
        memcpy(f + (size_t)y * W, line, (size_t)W * sizeof(float));
    }
    for (size_t i = 0; i < pix; i++) {
        const double k = sqrt((double)f[i]) / (F + 1.0);
        g->keep[i] = g->edit[i] ? 0.0f : k >= 1.0 ? 1.0f : (float)k;
    }
    free(f), free(line), free(v), free(z);
    return DIFFUSE_OK;
}

/* An 8-bit value of colour space @from in colour space @to. */
static uint8_t convert_space(uint8_t v, diffuse_color_space from, diffuse_color_space to) {
    if (from == to) return v;
    float c = (float)v / 255.0f;
    if (to == DIFFUSE_COLOR_SRGB)
        c = c <= 0.0031308f ? c * 12.92f : 1.055f * powf(c, 1.0f / 2.4f) - 0.055f;
    else
        c = c <= 0.04045f ? c / 12.92f : powf((c + 0.055f) / 1.055f, 2.4f);
    c = c < 0.0f ? 0.0f : c > 1.0f ? 1.0f : c;
    return (uint8_t)nearbyintf(c * 255.0f);
}

/* out = keep * input + (1 - keep) * out per pixel, in the output's format,
 * origin and colour space; keep 1 copies the input's values (and alpha,
 * 255 for RGB8 input) exactly. */
static void edit_paste_back(const edit_plan *g, diffuse_image *out) {
    const diffuse_image *in = g->p->image;
    const int ib = df_bytes_per_pixel(in->format), iswap = in->format == DIFFUSE_PIXEL_BGRA8;
    const int ob = df_bytes_per_pixel(out->format), oswap = out->format == DIFFUSE_PIXEL_BGRA8;
    for (uint32_t y = 0; y < out->height; y++) {
        const uint32_t irow = in->origin == DIFFUSE_ORIGIN_BOTTOM_LEFT ? in->height - 1 - y : y;
        const uint32_t orow = out->origin == DIFFUSE_ORIGIN_BOTTOM_LEFT ? out->height - 1 - y : y;
        const uint8_t *s = in->data + (size_t)irow * in->stride;
        uint8_t *d = out->data + (size_t)orow * out->stride;
        const float *keep = g->keep + (size_t)y * out->width;
        for (uint32_t x = 0; x < out->width; x++, s += ib, d += ob) {
            const float k = keep[x];
            if (k <= 0.0f) continue;
            uint8_t v[4];
            for (int c = 0; c < 3; c++) v[c] = convert_space(s[iswap ? 2 - c : c], in->color_space, out->color_space);
            v[3] = ib == 4 ? s[3] : 255;
            for (int c = 0; c < ob; c++) {
                uint8_t *dc = d + (c < 3 && oswap ? 2 - c : c);
                *dc = k >= 1.0f ? v[c] : (uint8_t)nearbyintf(k * (float)v[c] + (1.0f - k) * (float)*dc);
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The pipeline                                                              */
/* ------------------------------------------------------------------------ */

static void edit_plan_free(edit_plan *g) {
    free(g->edit), free(g->keep), free(g->lmask), free(g->moments), free(g->image_latents);
    free(g->masked_latents), free(g->x), free(g->noise), free(g->tmp), free(g->eps), free(g->rgb);
}

/* Sizes, host buffers, masks and the arena for a call. */
static diffuse_status edit_plan_init(df_run *r, const diffuse_edit_params *p, edit_plan *g) {
    const diffuse_model *m = r->model;
    const int f = (int)m->dims.vae_scale_factor;
    memset(g, 0, sizeof *g);
    g->p = p;
    g->cfg = pipe_use_cfg(p->guidance_scale, p->prompt, p->negative_prompt);
    g->width = (int)p->image->width;
    g->height = (int)p->image->height;
    g->lc = (int)m->dims.latent_channels;
    g->cin = (int)m->dims.unet_in_channels;
    if (g->width % f || g->height % f)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "image is %dx%d: this model needs sides that are multiples of %d (its VAE scale factor)",
                       g->width, g->height, f);
    if (g->cin != g->lc && g->cin != 2 * g->lc + 1)
        return df_fail(r->err, DIFFUSE_ERR_UNSUPPORTED,
                       "the UNet takes %d input channels: edit needs %d (text-to-image) or %d (inpainting)", g->cin,
                       g->lc, 2 * g->lc + 1);
    g->need_image = g->cin == g->lc || p->strength < 1.0f;
    g->h = g->height / f;
    g->w = g->width / f;
    g->hw = (size_t)g->h * g->w;
    g->numel = (size_t)g->lc * g->hw;
    const size_t pix = (size_t)g->width * g->height, lat = g->numel * sizeof(float);
    const int b = 1 + g->cfg;
    g->edit = malloc(pix);
    g->keep = malloc(pix * sizeof(float));
    g->lmask = malloc(g->hw * sizeof(float));
    g->moments = malloc(2 * lat);
    g->image_latents = malloc(lat);
    g->masked_latents = malloc(lat);
    g->x = malloc(lat), g->noise = malloc(lat), g->tmp = malloc(lat);
    g->eps = malloc((size_t)b * lat);
    g->rgb = malloc(3 * pix * sizeof(float));
    if (!g->edit || !g->keep || !g->lmask || !g->moments || !g->image_latents || !g->masked_latents || !g->x ||
        !g->noise || !g->tmp || !g->eps || !g->rgb)
        return df_fail(r->err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for a %dx%d edit", g->width, g->height);
    edit_read_mask(g);
    /* diffusers: interpolate(mask, size=(h, w)), mode "nearest": pixel (y f, x f) */
    for (int y = 0; y < g->h; y++)
        for (int x = 0; x < g->w; x++)
            g->lmask[(size_t)y * g->w + x] = g->edit[(size_t)y * f * g->width + (size_t)x * f];
    diffuse_status st = edit_keep_weights(r, g);
    const size_t bytes = pipe_img2img_arena_bytes(r, b, g->cin, g->height, g->width, &g->enc_tile, &g->dec_tile);
    if (st == DIFFUSE_OK && !bytes)
        st = df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "image size %dx%d is too small for this model", g->width,
                     g->height);
    return st == DIFFUSE_OK ? pipe_reserve(r, bytes) : st;
}

/* The VAE encodes diffusers makes, each with its posterior drawn from the
 * generator of seed + 0 (prepare_latents and prepare_mask_latents encode
 * the single input image with generator[0] and repeat the result for every
 * image): the image's latents first (when used), drawn here; the masked
 * image's draw comes after image 0's initial noise (edit_start). */
static diffuse_status edit_encode(df_run *r, edit_plan *g) {
    const uint32_t total = (uint32_t)(g->need_image + (g->cin != g->lc));
    uint32_t done = 0;
    diffuse_status st = pipe_progress(r, DIFFUSE_STAGE_ENCODE, 0, total);
    pipe_load_image(g->p->image, g->rgb);
    if (st == DIFFUSE_OK && g->need_image) {
        st = pipe_vae_encode(r, g->rgb, g->height, g->width, g->enc_tile, g->moments);
        df_rng_randn(&g->rng0, g->tmp, g->numel);
        if (st == DIFFUSE_OK)
            st = vae_posterior_latents(r->model->vae_net, g->moments, g->tmp, 1, g->h, g->w, g->image_latents, r->err);
        if (st == DIFFUSE_OK) st = pipe_progress(r, DIFFUSE_STAGE_ENCODE, ++done, total);
    }
    if (st == DIFFUSE_OK && g->cin != g->lc) { /* masked_image = image * (mask < 0.5) */
        const size_t pix = (size_t)g->width * g->height;
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < pix; i++)
                if (g->edit[i]) g->rgb[(size_t)c * pix + i] = 0.0f;
        st = pipe_vae_encode(r, g->rgb, g->height, g->width, g->enc_tile, g->moments);
        if (st == DIFFUSE_OK) st = pipe_progress(r, DIFFUSE_STAGE_ENCODE, ++done, total);
    }
    return st;
}

/* Embeddings and UNet buffers from the arena, then the prompt and the encodes. */
static diffuse_status edit_prepare(df_run *r, edit_plan *g) {
    const clip_text_config *tc = &r->model->text_net->cfg;
    const int b = 1 + g->cfg;
    g->text.emb = bk_alloc(r->bk, (size_t)b * tc->max_positions * tc->hidden * sizeof(float));
    g->unet_in = g->text.emb ? bk_alloc(r->bk, (size_t)b * g->cin * g->hw * sizeof(float)) : NULL;
    g->unet_out = g->unet_in ? bk_alloc(r->bk, (size_t)b * g->numel * sizeof(float)) : NULL;
    if (!g->unet_out) return df_fail(r->err, r->bk->err.status, "%s", r->bk->err.msg);
    df_rng_init(&g->rng0, g->p->seed);
    diffuse_status st = pipe_encode_prompts(r, g->p->prompt, g->p->negative_prompt, g->cfg, 0, &g->text);
    if (st == DIFFUSE_OK) st = edit_encode(r, g);
    return st;
}

/* The starting sample of image @i from @rng, in diffusers' order: its noise;
 * for image 0 then the masked image's posterior draw (made, and discarded,
 * for 4-channel UNets too); then pure noise * init_noise_sigma at strength
 * 1, else the image latents noised at the first evaluation. For 9-channel
 * UNets the mask and masked-image latents go into each batch entry's input. */
static diffuse_status edit_start(df_run *r, edit_plan *g, sched *s, df_rng *rng, uint32_t i, size_t *first) {
    diffuse_status st = sched_img2img_start(s, g->p->strength, first, r->err);
    if (st != DIFFUSE_OK) return df_fail_prefix(r->err, "sampler: ");
    df_rng_randn(rng, g->noise, g->numel);
    if (i == 0) {
        df_rng_randn(rng, g->tmp, g->numel);
        if (g->cin != g->lc)
            st = vae_posterior_latents(r->model->vae_net, g->moments, g->tmp, 1, g->h, g->w, g->masked_latents,
                                       r->err);
    }
    if (st == DIFFUSE_OK && g->p->strength == 1.0f) {
        const float sigma0 = sched_init_noise_sigma(s);
        for (size_t j = 0; j < g->numel; j++) g->x[j] = g->noise[j] * sigma0;
    } else if (st == DIFFUSE_OK) {
        st = sched_add_noise(s, *first, g->image_latents, g->noise, g->x, r->err);
    }
    for (int k = 0; k < 1 + g->cfg && st == DIFFUSE_OK && g->cin != g->lc; k++) {
        float *in = g->unet_in + (size_t)k * g->cin * g->hw;
        st = r->bk->ops->upload(r->bk, in + g->numel, g->lmask, g->hw * sizeof(float));
        if (st == DIFFUSE_OK)
            st = r->bk->ops->upload(r->bk, in + g->numel + g->hw, g->masked_latents, g->numel * sizeof(float));
    }
    return st;
}

/* The legacy 4-channel step end: outside the mask, the image latents noised
 * to the next evaluation's timestep (clean after the last one). */
static diffuse_status edit_blend(df_run *r, edit_plan *g, const sched *s, size_t i) {
    const float *proper = g->image_latents;
    if (i + 1 < sched_num_evals(s)) {
        diffuse_status st = sched_add_noise(s, i + 1, g->image_latents, g->noise, g->tmp, r->err);
        if (st != DIFFUSE_OK) return st;
        proper = g->tmp;
    }
    for (int c = 0; c < g->lc; c++)
        for (size_t j = 0; j < g->hw; j++) {
            const size_t at = (size_t)c * g->hw + j;
            g->x[at] = (1.0f - g->lmask[j]) * proper[at] + g->lmask[j] * g->x[at];
        }
    return DIFFUSE_OK;
}

/* One sampler run for image @i (seed + i): writes the final latents into g->x. */
static diffuse_status edit_denoise(df_run *r, edit_plan *g, uint32_t i) {
    const int b = 1 + g->cfg;
    sched *s = NULL;
    size_t first = 0;
    df_rng rng_i, *rng = &g->rng0;
    if (i > 0) {
        df_rng_init(&rng_i, g->p->seed + i);
        rng = &rng_i;
    }
    diffuse_status st = sched_create(r->model->scheduler_config, g->p->sampler, (int)g->p->steps, g->numel, &s, r->err);
    if (st != DIFFUSE_OK) return df_fail_prefix(r->err, "sampler: ");
    st = edit_start(r, g, s, rng, i, &first);
    pipe_set_latents(r, g->x, g->lc, g->h, g->w); /* previews (diffuse_ctx_set_preview) */
    const size_t n_evals = sched_num_evals(s);
    for (size_t e = first; e < n_evals && st == DIFFUSE_OK; e++) {
        const float t = (float)sched_timestep(s, e);
        st = sched_scale_model_input(s, e, g->x, g->tmp, r->err);
        for (int k = 0; k < b && st == DIFFUSE_OK; k++)
            st = r->bk->ops->upload(r->bk, g->unet_in + (size_t)k * g->cin * g->hw, g->tmp, g->numel * sizeof(float));
        if (st == DIFFUSE_OK)
            st = pipe_unet_eval(r, &g->text, g->unet_in, g->unet_out, b, g->h, g->w, t, g->p->guidance_scale,
                                g->numel, g->eps);
        if (st == DIFFUSE_OK) st = pipe_preview_x0(r, s, e, e + 1 - first, n_evals - first, g->x, g->eps);
        if (st == DIFFUSE_OK) st = sched_step(s, e, g->eps, g->x, rng, 1, g->x, r->err);
        if (st == DIFFUSE_OK && g->cin == g->lc) st = edit_blend(r, g, s, e);
        if (st == DIFFUSE_OK)
            st = pipe_progress(r, DIFFUSE_STAGE_DENOISE, (uint32_t)(e + 1 - first), (uint32_t)(n_evals - first));
    }
    pipe_set_latents(r, NULL, 0, 0, 0);
    sched_free(s);
    return st;
}

diffuse_status pipe_edit(df_run *r, const diffuse_edit_params *p, diffuse_images **out) {
    edit_plan g;
    diffuse_images *images = NULL;
    diffuse_status st = edit_plan_init(r, p, &g);
    r->decode_tile = g.dec_tile;
    if (st == DIFFUSE_OK)
        st = pipe_images_alloc(r, p->n_images, (uint32_t)g.width, (uint32_t)g.height, &p->output,
                               p->output_images, p->seed, &images);
    const size_t base = bk_mark(r->bk);
    if (st == DIFFUSE_OK) st = edit_prepare(r, &g);
    for (uint32_t i = 0; st == DIFFUSE_OK && i < p->n_images; i++) {
        r->image_index = i;
        st = edit_denoise(r, &g, i);
        if (st == DIFFUSE_OK) st = pipe_vae_decode(r, g.x, g.h, g.w, g.dec_tile, g.rgb, &images->images[i]);
        if (st == DIFFUSE_OK) edit_paste_back(&g, &images->images[i]);
    }
    bk_release(r->bk, base);
    edit_plan_free(&g);
    if (st != DIFFUSE_OK) {
        diffuse_images_free(images);
        return st;
    }
    *out = images;
    return DIFFUSE_OK;
}
