/*
 * vae.h - diffusers' AutoencoderKL (the Stable-Diffusion VAE) on the backend
 * ops: the encoder that turns an image into the moments of the latent
 * posterior, the posterior sample that becomes the UNet's latents, and the
 * decoder (whole or in blended tiles) that turns latents back into an image.
 *
 * Shapes: B batch, Ci/Co image channels (3), H x W image, L latent channels
 * (4), f = 2^(levels-1) scale factor (8), h x w = H/f x W/f latent size.
 * Latent spaces: "moments" (B, 2L, h, w) are the encoder's output [mean |
 * logvar]; "latents" are what the UNet sees: scaling_factor * (sample -
 * shift_factor). vae_decode takes latents and undoes that scaling itself.
 */
#ifndef DIFFUSE_NETS_VAE_H
#define DIFFUSE_NETS_VAE_H

#include "backend.h"
#include "model/safetensors.h"
#include "nets/blocks.h"

#include <json-c/json.h>

#define VAE_MAX_LEVELS 8 /* len(block_out_channels) */

/* The config.json keys the network depends on, with diffusers' defaults. */
typedef struct vae_config {
    int in_channels, out_channels;  /* Ci, Co: image channels (3) */
    int latent_channels;            /* L (4) */
    int levels;                     /* len(block_out_channels) */
    int block_out[VAE_MAX_LEVELS];  /* channels per level (128, 256, 512, 512) */
    int layers;                     /* layers_per_block (decoder blocks have one more) */
    int groups;                     /* norm_num_groups (32) */
    int mid_attention;              /* mid_block_add_attention */
    int quant_conv, post_quant_conv; /* use_quant_conv, use_post_quant_conv */
    float scaling_factor;           /* 0.18215 for SD 1.x/2.x */
    float shift_factor;             /* 0 when null */
    int sample_size;                /* native image size: diffusers' tile size in pixels */
    int scale;                      /* f = 2^(levels - 1) */
} vae_config;

/* UNetMidBlock2D of the VAE: resnet, single-head self-attention, resnet. */
typedef struct vae_mid_block {
    resnet_block res[2];  /* mid_block.resnets.0/1 (C -> C) */
    int has_attn;         /* mid_block_add_attention */
    int groups;           /* norm_num_groups of the attention's GroupNorm */
    nn_norm attn_norm;    /* attentions.0.group_norm (C), eps 1e-6 */
    nn_linear q, k, v;    /* to_q/to_k/to_v (C, C) + bias */
    nn_linear out;        /* to_out.0 (C, C) + bias */
} vae_mid_block;

typedef struct vae_down_block { /* DownEncoderBlock2D */
    resnet_block *res;    /* (layers) into vae_model.res_slab */
    int has_down;         /* all but the last level */
    downsample2d down;    /* pad (0, 1, 0, 1), 3x3 stride 2 */
} vae_down_block;

typedef struct vae_up_block {   /* UpDecoderBlock2D */
    resnet_block *res;    /* (layers + 1) into vae_model.res_slab */
    int has_up;           /* all but the last up block */
    upsample2d up;        /* nearest x2, 3x3 conv */
} vae_up_block;

typedef struct vae_model {
    vae_config cfg;
    /* encoder */
    nn_conv enc_conv_in;        /* (C0, Ci, 3, 3) */
    vae_down_block down[VAE_MAX_LEVELS];
    vae_mid_block enc_mid;      /* at C_last */
    nn_norm enc_norm_out;       /* conv_norm_out (C_last) */
    nn_conv enc_conv_out;       /* (2L, C_last, 3, 3) */
    nn_conv quant_conv;         /* (2L, 2L, 1, 1); w NULL without use_quant_conv */
    /* decoder */
    nn_conv post_quant_conv;    /* (L, L, 1, 1); w NULL without use_post_quant_conv */
    nn_conv dec_conv_in;        /* (C_last, L, 3, 3) */
    vae_mid_block dec_mid;      /* at C_last */
    vae_up_block up[VAE_MAX_LEVELS]; /* up_blocks.0 is the deepest: reversed(block_out_channels) */
    nn_norm dec_norm_out;       /* conv_norm_out (C0) */
    nn_conv dec_conv_out;       /* (Co, C0, 3, 3) */
    resnet_block *res_slab;     /* every resnet of both halves; owned */
} vae_model;

/* Which half of the network a workspace is for. */
typedef enum vae_pass {
    VAE_ENCODE = 0,
    VAE_DECODE = 1
} vae_pass;

/* Reads and checks an AutoencoderKL config.json object. Missing keys take
 * diffusers' constructor defaults; latents_mean, latents_std and
 * force_upcast are accepted and ignored (the SD 1.x/2.x pipelines and
 * float32 do not use them).
 * @return DIFFUSE_OK; DIFFUSE_ERR_MODEL_CONFIG for a wrong type or range and
 *         for settings this VAE does not implement (block types other than
 *         DownEncoderBlock2D / UpDecoderBlock2D, act_fn other than silu, a
 *         non-positive scaling_factor, ...); the message names key and value. */
diffuse_status vae_read_config(const struct json_object *config, vae_config *cfg, df_error *err);

/* Reads @config and looks up every weight "<prefix><diffusers name>" in @f
 * with its shape checked (a diffusers folder: comp[DF_COMP_VAE].weights and
 * key_prefix). The mid-block attention is also found under the names
 * diffusers < 0.14 saved (query, key, value, proj_attn), which diffusers
 * still converts on load.
 * @return DIFFUSE_OK and *out; the statuses of vae_read_config;
 *         DIFFUSE_ERR_MODEL_MISSING_TENSOR; DIFFUSE_ERR_MODEL_SHAPE (message:
 *         file, tensor, found vs expected); DIFFUSE_ERR_OUT_OF_MEMORY;
 *         DIFFUSE_ERR_INVALID_ARGUMENT (NULL file, config or out). On failure
 *         *out is NULL. Weight pointers stay valid while @f lives; the model
 *         is immutable and may be shared by threads. */
diffuse_status vae_load(const st_file *f, const char *prefix, const struct json_object *config, vae_model **out,
                        df_error *err);
/* Accepts NULL. */
void vae_free(vae_model *m);

/* Arena bytes vae_encode (VAE_ENCODE) or vae_decode (VAE_DECODE) needs for
 * @batch images of @height x @width pixels (both passes take the image size;
 * the decoder's latents are height/f x width/f), op scratch included, not
 * counting the caller's input and output buffers. Computed by walking the
 * pass in planning mode. 0 when the sizes are invalid (non-positive or not
 * multiples of f). */
size_t vae_workspace_bytes(const vae_model *m, vae_pass which, int batch, int height, int width);

/* Encoder + quant_conv, diffusers' vae.encode(x).latent_dist.parameters:
 *   image (B, Ci, H, W)     backend memory, values in [-1, 1]
 *   moments (B, 2L, h, w)   backend memory, written: [mean | logvar] (logvar
 *                           not yet clamped; see vae_posterior_latents)
 * H and W must be multiples of f (diffusers would pad odd sizes through the
 * downsamplers; SD pipelines never give them). Activations come from bk's
 * arena (reserve vae_workspace_bytes(VAE_ENCODE) first) and are released
 * before returning.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL buffers, sizes not
 *         positive multiples of f); the backend's status with its message in
 *         bk->err when an op fails (DIFFUSE_ERR_OUT_OF_MEMORY: arena too
 *         small). */
diffuse_status vae_encode(const vae_model *m, bk_backend *bk, const float *image, int batch, int height, int width,
                          float *moments);

/* The UNet's latents from the posterior, all in host memory:
 *   latents = scaling_factor * (mean + exp(0.5 * clamp(logvar, -30, 20)) * noise - shift_factor)
 * with moments (B, 2L, h, w) from vae_encode and noise (B, L, h, w) drawn by
 * the caller (diffusers: randn_tensor with the pipeline's generator, the
 * first draw of an img2img call); noise NULL gives the posterior mean
 * (latent_dist.mode()). latents is (B, L, h, w).
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL buffers, sizes). */
diffuse_status vae_posterior_latents(const vae_model *m, const float *moments, const float *noise, int batch, int h,
                                     int w, float *latents, df_error *err);

/* post_quant_conv + decoder on latents / scaling_factor + shift_factor:
 *   latents (B, L, h, w)    backend memory: the UNet's latents (scaled)
 *   image (B, Co, h*f, w*f) backend memory, written; about [-1, 1], not clamped
 * Any h, w >= 1. Activations from bk's arena (reserve
 * vae_workspace_bytes(VAE_DECODE, B, h*f, w*f) first), released before
 * returning.
 * @return as vae_encode. */
diffuse_status vae_decode(const vae_model *m, bk_backend *bk, const float *latents, int batch, int h, int w,
                          float *image);

/* Tiled passes for images whose whole-image workspace is too large, as
 * diffusers' AutoencoderKL with enable_tiling() (_tiled_encode, tiled_decode):
 * the input is cut into square tiles of @tile that start every 3/4 @tile,
 * each tile runs on its own, and each output tile is blended linearly over a
 * quarter of its side with the tile above and the tile on its left before its
 * top-left 3/4 is kept. Inputs no larger than @tile in both sides run whole,
 * exactly as vae_encode / vae_decode. The result is not the whole-image
 * pass: each tile's GroupNorm statistics and mid-block attention see only
 * that tile, so it differs everywhere, most at the seams. tests/test_vae.c
 * matches diffusers' tiled output to ~2e-6 and reports the distance to the
 * whole-image pass: 0.71 of max|output| for its random-weight VAE with
 * 8-latent tiles (random weights have no locality; a trained VAE with the
 * default 64-latent tiles should differ much less, not measured here).
 * @tile: the input tile side, pixels for encode (a multiple of 4f), latents
 * for decode (a multiple of 4); 0 takes diffusers' default from the config's
 * sample_size (encode: sample_size; decode: sample_size / f, 64 for SD).
 * Memory: the arena needs vae_tiled_workspace_bytes; blending runs on the
 * host in buffers malloc'ed for the call (the whole input, two rows of
 * output tiles and one row of output), freed before it returns.
 * Arguments, units and statuses as vae_encode / vae_decode, plus
 * DIFFUSE_ERR_INVALID_ARGUMENT for a bad @tile and DIFFUSE_ERR_OUT_OF_MEMORY
 * for the host buffers (message in bk->err). */
diffuse_status vae_encode_tiled(const vae_model *m, bk_backend *bk, const float *image, int batch, int height,
                                int width, int tile, float *moments);
diffuse_status vae_decode_tiled(const vae_model *m, bk_backend *bk, const float *latents, int batch, int h, int w,
                                int tile, float *image);
/* Arena bytes of vae_encode_tiled / vae_decode_tiled (@which) for @batch
 * images of @height x @width pixels (as vae_workspace_bytes) and @tile in the
 * pass's units (as above). 0 when the arguments are invalid. */
size_t vae_tiled_workspace_bytes(const vae_model *m, vae_pass which, int batch, int height, int width, int tile);

#endif /* DIFFUSE_NETS_VAE_H */
