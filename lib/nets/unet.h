/*
 * unet.h - diffusers' UNet2DConditionModel (Stable Diffusion 1.x / 2.x, 4- or
 * 9-channel input) on the backend ops: configured from its config.json,
 * weights looked up by their diffusers names with shape checks, one forward
 * pass per denoising step with all activations in the backend's arena.
 *
 * Shapes: B batch, Cin/Cout latent channels, h x w latent size, S text
 * tokens, Dc = cross_attention_dim, T = time-embedding width (4 * C0).
 */
#ifndef DIFFUSE_NETS_UNET_H
#define DIFFUSE_NETS_UNET_H

#include "backend.h"
#include "model/safetensors.h"
#include "nets/blocks.h"
#include "nets/transformer2d.h"

#include <json-c/json.h>

#define UNET_MAX_LEVELS 8 /* len(block_out_channels) */

/* The parts of config.json the network depends on, resolved as diffusers'
 * constructor resolves them (per-level lists expanded, heads =
 * num_attention_heads or attention_head_dim). */
typedef struct unet_config {
    int in_channels, out_channels;   /* Cin (4, 9 for inpainting), Cout */
    int levels;                      /* L = len(block_out_channels) */
    int block_out[UNET_MAX_LEVELS];  /* channels per level (320, 640, 1280, 1280) */
    int layers[UNET_MAX_LEVELS];     /* layers_per_block per level (up blocks have one more) */
    int down_attn[UNET_MAX_LEVELS];  /* down block i is CrossAttnDownBlock2D */
    int up_attn[UNET_MAX_LEVELS];    /* up block i (deepest first) is CrossAttnUpBlock2D */
    int heads[UNET_MAX_LEVELS];      /* attention heads per level (down order) */
    int tf_layers[UNET_MAX_LEVELS];  /* transformer_layers_per_block per level */
    int mid_block;                   /* 1: UNetMidBlock2DCrossAttn, 0: none (mid_block_type null) */
    float mid_scale;                 /* mid_block_scale_factor */
    int cross_dim;                   /* Dc */
    int groups;                      /* norm_num_groups */
    float eps;                       /* norm_eps (resnets, conv_norm_out) */
    int linear_proj;                 /* use_linear_projection */
    int flip_sin_to_cos;
    float freq_shift;
    int time_dim;                    /* T: time_embedding_dim or 4 * C0 */
    int conv_in_kernel, conv_out_kernel; /* odd, 3 */
    int downsample_padding;          /* 1 (0: explicit (0,1,0,1) pad) */
    int center_input_sample;         /* sample = 2 * sample - 1 first */
    int sample_size[2];              /* native latent h, w (0 when unset) */
} unet_config;

typedef struct unet_down_block {
    int n;                 /* resnets (layers_per_block) */
    resnet_block *res;     /* (n) */
    transformer2d *attn;   /* (n) or NULL for DownBlock2D */
    int has_down;          /* all but the last level */
    downsample2d down;
} unet_down_block;

typedef struct unet_up_block {
    int n;                 /* resnets (layers_per_block + 1) */
    resnet_block *res;     /* (n) */
    transformer2d *attn;   /* (n) or NULL for UpBlock2D */
    int has_up;            /* all but the last up block */
    upsample2d up;
} unet_up_block;

typedef struct unet_model {
    unet_config cfg;
    nn_conv conv_in;            /* (C0, Cin, k, k) */
    nn_linear time_lin1;        /* time_embedding.linear_1 (T, C0) */
    nn_linear time_lin2;        /* time_embedding.linear_2 (T, T) */
    unet_down_block down[UNET_MAX_LEVELS];
    resnet_block mid_res[2];    /* mid_block.resnets.0/1 */
    transformer2d mid_attn;     /* mid_block.attentions.0 */
    unet_up_block up[UNET_MAX_LEVELS]; /* up_blocks.0 is the deepest */
    nn_norm norm_out;           /* conv_norm_out (C0) */
    nn_conv conv_out;           /* (Cout, C0, k, k) */
} unet_model;

/* Reads and checks a UNet2DConditionModel config.json object.
 * @return DIFFUSE_OK; DIFFUSE_ERR_MODEL_CONFIG (missing key, wrong type or
 *         range, lists of the wrong length, channels not divisible by
 *         norm_num_groups); DIFFUSE_ERR_UNSUPPORTED (a valid diffusers
 *         setting this UNet does not implement: other block types,
 *         class/addition embeddings, resnet_time_scale_shift other than
 *         "default", dual or only cross-attention, ...). The message names
 *         the key and its value. */
diffuse_status unet_read_config(const struct json_object *config, unet_config *cfg, df_error *err);

/* Reads @config and looks up every weight "<prefix><diffusers name>" in @f
 * with its shape checked (a diffusers folder: the component's st_file and
 * key_prefix; see model.h).
 * @return DIFFUSE_OK and *out; the statuses of unet_read_config;
 *         DIFFUSE_ERR_MODEL_MISSING_TENSOR; DIFFUSE_ERR_MODEL_SHAPE (message:
 *         file, tensor, found vs expected shape); DIFFUSE_ERR_OUT_OF_MEMORY.
 *         On failure *out is NULL. Weight pointers stay valid while @f
 *         lives; the model is immutable and may be shared by threads. */
diffuse_status unet_load(const st_file *f, const char *prefix, const struct json_object *config, unet_model **out,
                         df_error *err);
/* Accepts NULL. */
void unet_free(unet_model *m);

/* Arena bytes unet_forward needs for @batch latents of h x w and @seq text
 * tokens, op scratch included (BK_OP_SCRATCH_BYTES), not counting the
 * caller's sample, text and output buffers. Computed by walking the forward
 * in planning mode, so it is exact for this backend-independent allocation
 * pattern. 0 when the sizes are invalid (see unet_forward). */
size_t unet_workspace_bytes(const unet_model *m, int batch, int h, int w, int seq);

/* One UNet evaluation, diffusers' UNet2DConditionModel.forward:
 *   sample (B, Cin, h, w)  backend memory
 *   timesteps (B)          host memory (float: scheduler timesteps may be fractional)
 *   text (B, S, Dc)        backend memory: encoder_hidden_states
 *   out (B, Cout, h, w)    backend memory, written
 * Latent sizes that are not multiples of 2^(L-1) follow diffusers
 * (forward_upsample_size: each up block upsamples to its skip's size).
 * All activations come from bk's arena (reserve unet_workspace_bytes first)
 * and are released before returning; nothing is malloc'ed.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL buffers,
 *         non-positive sizes, a latent too small for the levels, an odd size
 *         with downsample_padding 0, whose skips are not ~2x); the
 *         backend's status with its message in bk->err when an op fails
 *         (DIFFUSE_ERR_OUT_OF_MEMORY when the arena is too small). */
diffuse_status unet_forward(const unet_model *m, bk_backend *bk, const float *sample, int batch, int h, int w,
                            const float *timesteps, const float *text, int seq, float *out);

#endif /* DIFFUSE_NETS_UNET_H */
