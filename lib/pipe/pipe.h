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
} df_run;

/* Reports progress; DIFFUSE_CANCELLED (with a message) when the host's
 * callback returns nonzero. */
diffuse_status pipe_progress(df_run *r, diffuse_stage stage, uint32_t step, uint32_t total);

/* Monotonic clock in seconds. */
double pipe_now(void);

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

/* Makes the arena at least @bytes (between passes only). */
diffuse_status pipe_reserve(df_run *r, size_t bytes);

/* Allocates the result of a call: @n images of WxH in @fmt, zeroed.
 * Seeds seed + i. Free with diffuse_images_free. */
diffuse_status pipe_images_alloc(df_run *r, uint32_t n, uint32_t w, uint32_t h, const diffuse_output_format *fmt,
                                 uint64_t seed, diffuse_images **out);

/* Writes a decoded image (3, H, W) float in [-1, 1] (host memory) into @img
 * as diffusers' postprocess + numpy_to_pil does: round(clamp(x/2 + 0.5) * 255)
 * (round half to even), then the image's colour space, format and origin. */
void pipe_store_image(const float *chw, diffuse_image *img);

/* Reads an 8-bit host image into (3, H, W) floats in [-1, 1] as diffusers'
 * VaeImageProcessor does (x / 255 * 2 - 1), converting linear input to sRGB
 * first. @img must be exactly W x H. */
void pipe_load_image(const diffuse_image *img, float *chw);

/* The pipelines. @p has been checked by api.c. */
diffuse_status pipe_generate(df_run *r, const diffuse_generate_params *p, diffuse_images **out);

#endif /* DIFFUSE_PIPE_H */
