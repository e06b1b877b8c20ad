/*
 * estimate.c - diffuse_estimate_memory's plan: the arena a call reserves
 * (the same functions the pipelines call before they run), the host buffers
 * each pipeline allocates (mirroring their *_plan_init), and the returned
 * images. Nothing runs and no arena is touched.
 */
#include "pipe/pipe.h"

#include "model/model.h"

diffuse_status pipe_estimate(const df_run *r, diffuse_operation op, int width, int height, uint32_t n, int cfg,
                             diffuse_pixel_format format, pipe_estimate_t *e) {
    const diffuse_model *m = r->model;
    const int f = (int)m->dims.vae_scale_factor, lc = (int)m->dims.latent_channels;
    const int cin = (int)m->dims.unet_in_channels, b = 1 + cfg;
    if (width % f || height % f)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "size %dx%d: this model needs multiples of %d", width,
                       height, f);
    const size_t hw = (size_t)(height / f) * (size_t)(width / f), pix = (size_t)width * height;
    const size_t lat = (size_t)lc * hw * sizeof(float);
    int enc_tile = 0, dec_tile = 0;
    size_t arena = 0, host = 0;
    switch (op) {
    case DIFFUSE_OP_GENERATE: /* gen_plan_init: x, eps, rgb */
        arena = pipe_generate_arena_bytes(r, cfg, height, width, &dec_tile);
        host = lat + (size_t)b * lat + 3 * pix * sizeof(float);
        break;
    case DIFFUSE_OP_VARIATION: /* var_plan_init: moments, x, noise, eps, rgb */
        if (cin != lc)
            return df_fail(r->err, DIFFUSE_ERR_UNSUPPORTED,
                           "variation needs a %d-channel text-to-image UNet; this one takes %d", lc, cin);
        arena = pipe_img2img_arena_bytes(r, b, lc, height, width, &enc_tile, &dec_tile);
        host = 2 * lat + 2 * lat + (size_t)b * lat + 3 * pix * sizeof(float);
        break;
    case DIFFUSE_OP_EDIT: /* edit_plan_init: edit, keep, lmask, moments, 5 latents, eps, rgb */
        if (cin != lc && cin != 2 * lc + 1)
            return df_fail(r->err, DIFFUSE_ERR_UNSUPPORTED, "edit needs a UNet of %d or %d input channels, not %d",
                           lc, 2 * lc + 1, cin);
        arena = pipe_img2img_arena_bytes(r, b, cin, height, width, &enc_tile, &dec_tile);
        host = pix + pix * sizeof(float) + hw * sizeof(float) + 2 * lat + 5 * lat + (size_t)b * lat +
               3 * pix * sizeof(float);
        break;
    default:
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "unknown operation %d", (int)op);
    }
    if (!arena)
        return df_fail(r->err, DIFFUSE_ERR_INVALID_ARGUMENT, "size %dx%d is too small for this model", width,
                       height);
    e->arena_bytes = arena;
    e->host_bytes = host;
    e->output_bytes = (size_t)n * df_bytes_per_pixel(format) * pix;
    e->vae_tiled = enc_tile || dec_tile;
    e->fits = !r->memory_budget || arena <= r->memory_budget;
    return DIFFUSE_OK;
}
