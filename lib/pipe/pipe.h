/*
 * pipe.h - the three pipelines (generate, edit, variation) and what they
 * share: prompt encoding with classifier-free guidance, progress and
 * cancellation, the arena plan of a run, and conversion between 8-bit host
 * images and the networks' float tensors. They mirror diffusers'
 * StableDiffusion{,Img2Img,Inpaint}Pipeline step for step.
 */
#ifndef DIFFUSE_PIPE_H
#define DIFFUSE_PIPE_H

#include "backend.h"
#include "common.h"
#include "model/model.h"

#include <stdatomic.h>
#include <stdint.h>

/* Everything a pipeline call needs from its context. */
typedef struct df_run {
    const diffuse_model *model;
    bk_backend *bk;
    const df_logger *log;
    diffuse_progress_fn progress_fn; /* may be NULL */
    void *progress_user;
    df_error *err;                   /* the context's error record */
    double t_start;                  /* monotonic seconds at the call's start */
    uint32_t image_index;            /* image being worked on */
    uint32_t image_count;            /* images of the call */
    uint64_t memory_budget;          /* arena bytes allowed; 0 = no limit */
    /* Device backends: the weights' share of the context's budget (taken
     * out of it before memory_budget above); 0 on the CPU. */
    uint64_t budget_weights;
    /* Async jobs (lib/job.c); NULL for blocking calls. pipe_progress calls
     * @observe with every report (before the host's callback) and returns
     * DIFFUSE_CANCELLED once *@cancel is nonzero. Both run on the thread
     * that runs the pipeline. */
    void (*observe)(void *user, const diffuse_progress *p);
    void *observe_user;
    const atomic_int *cancel;
    /* Preview (diffuse_ctx_set_preview): @preview_fn is called at DENOISE
     * steps that are multiples of @preview_every (and the last step) with
     * @latents projected to RGB by @preview_proj ((L + 1) x 3: L weights
     * rows, then the bias). The pipelines point @latents at their sample
     * with pipe_set_latents while they denoise. */
    diffuse_preview_fn preview_fn;
    void *preview_user;
    uint32_t preview_every;
    const float *preview_proj;
    const float *latents;
    int lat_c, lat_h, lat_w;
    /* Decoded previews (diffuse_ctx_set_preview_decode): at preview steps
     * that are multiples of @preview_decode_every (and the last), the
     * pipelines leave the predicted clean latents in @preview_x0 (host,
     * lat_c * lat_h * lat_w floats, allocated on first use and freed by
     * pipe_run_cleanup) and set @preview_x0_ready; the preview is then the VAE
     * decode of it, tiled as @decode_tile (what the pipeline planned). */
    uint32_t preview_decode_every;
    int decode_tile;
    float *preview_x0;
    int preview_x0_ready;
} df_run;

struct sched;

/* Before sched_step of evaluation @i, reported as DENOISE @step of @total:
 * when a decoded preview is due at that step, stores the predicted clean
 * latents of sample @x and guided model output @eps. */
diffuse_status pipe_preview_x0(df_run *r, const struct sched *s, size_t i, size_t step, size_t total, const float *x,
                               const float *eps);

/* Frees what a run allocated for previews. */
void pipe_run_cleanup(df_run *r);

/* Where the sample is while denoising (NULL: no preview). */
static inline void pipe_set_latents(df_run *r, const float *x, int c, int h, int w) {
    r->latents = x;
    r->lat_c = c;
    r->lat_h = h;
    r->lat_w = w;
}

/* Fits the latent -> RGB projection of diffuse_ctx_set_preview: decodes
 * PIPE_PREVIEW_FIT_N fixed latents (seeded Gaussian, 8x8, latent b with
 * standard deviation 2^b) with the model's
 * VAE and solves least squares between each latent pixel (+1) and the mean
 * RGB of its f x f pixel block. @proj receives (L + 1) x 3 floats. Uses and
 * reserves the backend's arena. */
#define PIPE_PREVIEW_FIT_N 4
diffuse_status pipe_fit_preview(const diffuse_model *m, bk_backend *bk, float *proj, df_error *err);

/* Without a budget, a VAE pass needing more working memory than this runs
 * in diffusers' blended tiles (SD at 1024x1024: 3.6 GiB whole, 0.9 GiB tiled). */
#define PIPE_VAE_UNTILED_MAX ((size_t)1536 << 20)

/* Reports progress (to r->observe, then the host's callback);
 * DIFFUSE_CANCELLED (with a message) when r->cancel is set or the host's
 * callback returns nonzero. */
diffuse_status pipe_progress(df_run *r, diffuse_stage stage, uint32_t step, uint32_t total);

/* The prompt embeddings of one call, (B, S, C) in backend memory:
 * B = 2 with guidance ([negative, prompt], as diffusers concatenates them),
 * else 1 ([prompt]). */
typedef struct pipe_text {
    float *emb;
    int batch, seq, width;
} pipe_text;

/* Arena bytes pipe_encode_prompts needs (besides the embeddings). */
size_t pipe_text_workspace_bytes(const diffuse_model *m, int batch);

/* Tokenizes (padded/truncated to the encoder's positions, with a warning
 * naming how many tokens were dropped) and encodes @prompt with @clip_skip
 * and, when @cfg, @negative (NULL = "") without clip_skip, as diffusers'
 * encode_prompt does. @t->emb must hold (1 + cfg) * S * C floats. */
diffuse_status pipe_encode_prompts(df_run *r, const char *prompt, const char *negative, int cfg, uint32_t clip_skip,
                                   pipe_text *t);

/* Makes the arena at least @bytes (between passes only); fails with
 * DIFFUSE_ERR_OUT_OF_MEMORY, before anything runs, above the budget. */
diffuse_status pipe_reserve(df_run *r, size_t bytes);

/* Chooses whole or tiled VAE decoding of an image of @width x @height: with
 * @fixed bytes of the arena already planned, *tile is 0 (whole) when the
 * whole pass fits the budget (or PIPE_VAE_UNTILED_MAX without one), else the
 * model's native latent tile; *bytes is the pass's workspace. */
void pipe_plan_decode(const df_run *r, size_t fixed, int width, int height, int *tile, size_t *bytes);

/* What the library allocates behind a diffuse_images (the public struct is
 * its first member): whether the pixels are the caller's (output_images). */
typedef struct df_images {
    diffuse_images pub;
    int caller_pixels; /* 1: diffuse_images_free leaves images[i].data alone */
} df_images;

/* Allocates the result of a call: @n images of WxH in @fmt, zeroed, or,
 * when @into is not NULL, pointing at the caller's n images (checked: size,
 * enums, data, stride). Seeds seed + i. Free with diffuse_images_free. */
diffuse_status pipe_images_alloc(df_run *r, uint32_t n, uint32_t w, uint32_t h, const diffuse_output_format *fmt,
                                 diffuse_image *into, uint64_t seed, diffuse_images **out);

/* Writes a decoded image (3, H, W) float in [-1, 1] (host memory) into @img
 * as diffusers' postprocess + numpy_to_pil does: round(clamp(x/2 + 0.5) * 255)
 * (round half to even), then the image's colour space, format and origin. */
void pipe_store_image(const float *chw, diffuse_image *img);

/* Reads an 8-bit host image into (3, H, W) floats in [-1, 1] as diffusers'
 * VaeImageProcessor does (x / 255 * 2 - 1), converting linear input to sRGB
 * first. @img must be exactly W x H. */
void pipe_load_image(const diffuse_image *img, float *chw);

/* ------------------------------------------------------------------------ */
/* Image-to-image helpers shared by variation and edit (in variation.c)      */
/* ------------------------------------------------------------------------ */

/* Whether a call runs classifier-free guidance: guidance_scale > 1, as in
 * diffusers, except that with an empty prompt and an empty (or NULL)
 * negative prompt both halves of the batch are the same, so the guided
 * prediction u + g * (u - u) is u and the second UNet pass is skipped. */
int pipe_use_cfg(float guidance, const char *prompt, const char *negative);

/* Arena bytes a run of @b (1 + cfg) UNet inputs of @cin channels on an
 * H x W image needs: the embeddings and UNet buffers plus the largest of
 * prompt encoding, one UNet pass, one VAE encode (with its image and
 * moments) and one VAE decode (with its latents and image). The VAE passes
 * are planned as pipe_plan_decode does (the encode in tiles of the config's
 * sample_size pixels): *enc_tile and *dec_tile are 0 (whole) or the tile
 * sides to pass to pipe_vae_encode / pipe_vae_decode. 0 when the sizes are
 * too small for the model. */
size_t pipe_img2img_arena_bytes(const df_run *r, int b, int cin, int height, int width, int *enc_tile,
                                int *dec_tile);

/* VAE-encodes the host image @chw (3, H, W) in [-1, 1] into the posterior
 * moments (2L, H/f, W/f) in host memory, whole (@tile 0) or in tiles of
 * @tile pixels, through arena memory released before returning. */
diffuse_status pipe_vae_encode(df_run *r, const float *chw, int height, int width, int tile, float *moments);

/* One UNet evaluation with guidance at timestep @t: @unet_in (b, Cin, h, w)
 * in backend memory is the prepared model input, @text its embeddings
 * (batch b: [negative, prompt] when b == 2). Writes the guided prediction
 * (L, h, w) to the first @numel floats of @eps (host, b * numel floats). */
diffuse_status pipe_unet_eval(df_run *r, const pipe_text *text, const float *unet_in, float *unet_out, int b,
                              int h, int w, float t, float guidance, size_t numel, float *eps);

/* Decodes the host latents @x (L, h, w), whole (@tile 0) or in tiles of
 * @tile latents, into @img (DECODE progress 0/1 and 1/1), using @rgb (3,
 * h*f, w*f floats, host) as scratch. */
diffuse_status pipe_vae_decode(df_run *r, const float *x, int h, int w, int tile, float *rgb, diffuse_image *img);

/* Arena bytes diffuse_generate reserves for one image of @width x @height
 * (with guidance when @cfg); *vae_tile as pipe_plan_decode. 0 when the size
 * is too small for the model. */
size_t pipe_generate_arena_bytes(const df_run *r, int cfg, int height, int width, int *vae_tile);

/* What one call needs (diffuse_estimate_memory; estimate.c). */
typedef struct pipe_estimate_t {
    size_t arena_bytes;  /* the context's arena */
    size_t host_bytes;   /* the pipeline's own host buffers */
    size_t output_bytes; /* returned images */
    int vae_tiled;       /* a VAE pass runs in tiles */
    int fits;            /* arena within r->memory_budget (or no budget) */
} pipe_estimate_t;

/* Plans a call of @op on @width x @height (already the native size when the
 * query said 0) without running it. @r needs model, err and memory_budget. */
diffuse_status pipe_estimate(const df_run *r, diffuse_operation op, int width, int height, uint32_t n, int cfg,
                             diffuse_pixel_format format, pipe_estimate_t *e);

/* The pipelines. @p has been checked by api.c. */
diffuse_status pipe_generate(df_run *r, const diffuse_generate_params *p, diffuse_images **out);

/* diffusers' StableDiffusionImg2ImgPipeline from each seed: see variation.c. */
diffuse_status pipe_variation(df_run *r, const diffuse_variation_params *p, diffuse_images **out);

/* diffusers' StableDiffusionInpaintPipeline, then the kept pixels pasted
 * back: see edit.c. */
diffuse_status pipe_edit(df_run *r, const diffuse_edit_params *p, diffuse_images **out);

#endif /* DIFFUSE_PIPE_H */
