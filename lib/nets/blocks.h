/*
 * blocks.h - the convolutional building blocks the UNet and the VAE share:
 * ResnetBlock2D (with or without a time embedding), Downsample2D and
 * Upsample2D as diffusers defines them, plus the small layer types (conv,
 * linear, norm), weight lookup with shape checks, and the forward context
 * that runs ops on a backend or, in planning mode, only measures the arena.
 *
 * Shapes: N batch, C channels, H x W spatial, HW = H*W, T time-embedding
 * width. Feature maps are NCHW float32 in backend memory.
 *
 * Memory rule for every *_forward here: its output buffer is the caller's;
 * temporaries come from the arena and are released before it returns, so
 * the arena top is the same before and after the call.
 */
#ifndef DIFFUSE_NETS_BLOCKS_H
#define DIFFUSE_NETS_BLOCKS_H

#include "backend.h"
#include "model/safetensors.h"

#include <stddef.h>

/* ------------------------------------------------------------------------ */
/* Forward context: one pass, or the planning walk that sizes it            */
/* ------------------------------------------------------------------------ */

/* A forward pass's handle on the backend. With planning = 1 no op runs (bk
 * may be NULL) and nn_alloc only counts bytes exactly as bk_alloc would, so
 * a network's workspace planner is its own forward walked in planning mode:
 * the plan cannot drift from the pass it sizes. */
typedef struct nn_ctx {
    bk_backend *bk;
    int planning;
    size_t used, peak; /* planning: simulated arena top and high-water mark */
} nn_ctx;

/* @floats float32 values from the arena (64-byte aligned). Returns NULL and
 * leaves the status in bk->err when the arena is too small. In planning mode
 * it returns a placeholder that must only be handed to ops. */
float *nn_alloc(nn_ctx *c, size_t floats);
size_t nn_mark(const nn_ctx *c);
void nn_release(nn_ctx *c, size_t mark);
/* DIFFUSE_CANCELLED (message in bk->err) once the backend's cancel flag is
 * set; DIFFUSE_OK otherwise and always while planning. */
diffuse_status nn_check_cancel(nn_ctx *c);

/* Status to return after a failed nn_alloc. */
diffuse_status nn_alloc_failed(const nn_ctx *c);

/* Return on failure. */
#define NN_TRY(expr)                        \
    do {                                    \
        diffuse_status nn_st_ = (expr);     \
        if (nn_st_ != DIFFUSE_OK) return nn_st_; \
    } while (0)
/* Run a backend op unless planning; return on failure. */
#define NN_OP(c, expr)                      \
    do {                                    \
        if (!(c)->planning) NN_TRY(expr);   \
    } while (0)
/* var = nn_alloc(c, floats) or return. */
#define NN_ALLOC(c, var, floats)                            \
    do {                                                    \
        if (!((var) = nn_alloc((c), (floats)))) return nn_alloc_failed(c); \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Weights                                                                   */
/* ------------------------------------------------------------------------ */

/* Where a network's weights come from: "<prefix><name>" in @file. */
typedef struct nn_source {
    const st_file *file;
    const char *prefix; /* "" in diffusers folders */
    const char *what;   /* component for messages: "unet", "vae" */
} nn_source;

/* Finds "<prefix><base><leaf>" with exactly @ndim dims of @shape and a
 * float32 view.
 * @return DIFFUSE_OK; DIFFUSE_ERR_MODEL_MISSING_TENSOR (absent or not a float
 *         tensor); DIFFUSE_ERR_MODEL_SHAPE (message: found vs expected). */
diffuse_status nn_tensor(const nn_source *s, const char *base, const char *leaf, int ndim, const int64_t *shape,
                         const float **out, df_error *err);

typedef struct nn_conv {
    const float *w; /* (Cout, Cin, K, K) */
    const float *b; /* (Cout) or NULL */
    int c_in, c_out, k;
} nn_conv;

typedef struct nn_linear {
    const float *w; /* (out, in): nn.Linear layout; a 1x1 conv's (out, in, 1, 1) is the same memory */
    const float *b; /* (out) or NULL */
    int in, out;
} nn_linear;

typedef struct nn_norm {
    const float *g, *b; /* (C) affine of a GroupNorm or LayerNorm */
    int c;
} nn_norm;

/* "<base>.weight" (+ "<base>.bias" when @bias) of a KxK conv. */
diffuse_status nn_conv_load(const nn_source *s, const char *base, int c_out, int c_in, int k, int bias, nn_conv *cv,
                            df_error *err);
/* A linear layer; @conv1x1 expects the weight as (out, in, 1, 1). */
diffuse_status nn_linear_load(const nn_source *s, const char *base, int out_f, int in_f, int bias, int conv1x1,
                              nn_linear *l, df_error *err);
diffuse_status nn_norm_load(const nn_source *s, const char *base, int c, nn_norm *n, df_error *err);

/* Convolution with stride 1 and "same" padding (K-1)/2: (N, Cin, H, W) ->
 * (N, Cout, H, W). */
diffuse_status nn_conv_same(nn_ctx *c, const nn_conv *cv, const float *in, float *out, int n, int h, int w);
/* out (rows, out) = in (rows, in) W^T + b. */
diffuse_status nn_linear_forward(nn_ctx *c, const nn_linear *l, const float *in, float *out, int rows);
/* GroupNorm of (N, C, HW) with @groups and @eps, then SiLU if @silu;
 * out may equal in. */
diffuse_status nn_group_norm(nn_ctx *c, const nn_norm *g, const float *in, float *out, int n, int hw, int groups,
                             float eps, int silu);

/* ------------------------------------------------------------------------ */
/* ResnetBlock2D                                                             */
/* ------------------------------------------------------------------------ */

/* diffusers ResnetBlock2D (pre-norm, time_embedding_norm "default"):
 *   h = conv1(silu(GN1(x)));  h += time_emb_proj(temb_act)[:, :, None, None]
 *   h = conv2(silu(GN2(h)));  out = (shortcut(x) + h) / out_scale
 * shortcut is a 1x1 conv ("conv_shortcut") when Cin != Cout, else identity.
 * Used with time embedding in the UNet, without (temb 0) in the VAE. */
typedef struct resnet_block {
    int c_in, c_out;
    int temb;        /* T: time-embedding width, 0 = no time_emb_proj */
    int groups;      /* GroupNorm groups of norm1 and norm2 (32) */
    float eps;       /* their eps: UNet norm_eps 1e-5, VAE 1e-6 */
    float out_scale; /* output_scale_factor (1; UNet mid block: mid_block_scale_factor) */
    nn_norm norm1;   /* (Cin) */
    nn_conv conv1;   /* (Cout, Cin, 3, 3) */
    nn_linear temb_proj; /* (Cout, T) when temb > 0 */
    nn_norm norm2;   /* (Cout) */
    nn_conv conv2;   /* (Cout, Cout, 3, 3) */
    nn_conv shortcut; /* (Cout, Cin, 1, 1), w NULL when Cin == Cout */
} resnet_block;

/* Looks up "<base>norm1.weight" ... ("down_blocks.0.resnets.1." style base)
 * and checks every shape; fails with DIFFUSE_ERR_MODEL_CONFIG when @groups
 * does not divide Cin or Cout. */
diffuse_status resnet_block_load(const nn_source *s, const char *base, int c_in, int c_out, int temb, int groups,
                                 float eps, float out_scale, resnet_block *r, df_error *err);

/* x (N, Cin, H, W) -> out (N, Cout, H, W); out must not alias x.
 * @temb_act is silu(temb) (N, T) in backend memory (the UNet computes it
 * once per pass, as every resnet applies the same SiLU), NULL when temb 0.
 * Temporaries: N*HW*(Cin + Cout) + N*Cout floats. */
diffuse_status resnet_block_forward(nn_ctx *c, const resnet_block *r, const float *x, const float *temb_act,
                                    float *out, int n, int h, int w);

/* ------------------------------------------------------------------------ */
/* Downsample2D / Upsample2D                                                 */
/* ------------------------------------------------------------------------ */

/* diffusers Downsample2D with use_conv: a 3x3 stride-2 conv ("<base>conv").
 * padding >= 1: symmetric padding (UNet downsample_padding, 1);
 * padding 0: F.pad (0, 1, 0, 1) (right and bottom) then no padding (VAE). */
typedef struct downsample2d {
    nn_conv conv; /* (C, C, 3, 3) */
    int padding;
} downsample2d;

diffuse_status downsample2d_load(const nn_source *s, const char *base, int channels, int padding, downsample2d *d,
                                 df_error *err);
/* Output size of an HxW input (0 when the input is too small). */
void downsample2d_out_size(const downsample2d *d, int h, int w, int *h_out, int *w_out);
/* x (N, C, H, W) -> out (N, C, Hout, Wout). No temporaries. */
diffuse_status downsample2d_forward(nn_ctx *c, const downsample2d *d, const float *x, float *out, int n, int h,
                                    int w);

/* diffusers Upsample2D with use_conv: nearest-neighbour to (Hout, Wout) then
 * a 3x3 conv with padding 1 ("<base>conv"). Hout is 2H (scale_factor 2) or
 * 2H - 1 (the UNet's forward_upsample_size for odd skips: torch's nearest
 * interpolation to 2H - 1 picks source row y/2, i.e. the 2x map without its
 * last row); likewise Wout. */
typedef struct upsample2d {
    nn_conv conv; /* (C, C, 3, 3) */
} upsample2d;

diffuse_status upsample2d_load(const nn_source *s, const char *base, int channels, upsample2d *u, df_error *err);
/* x (N, C, H, W) -> out (N, C, Hout, Wout), Hout in {2H - 1, 2H}, Wout in
 * {2W - 1, 2W}; DIFFUSE_ERR_INVALID_ARGUMENT for other sizes.
 * Temporaries: N*C*4HW floats (x2 map), plus as much again when cropping. */
diffuse_status upsample2d_forward(nn_ctx *c, const upsample2d *u, const float *x, float *out, int n, int h, int w,
                                  int h_out, int w_out);

#endif /* DIFFUSE_NETS_BLOCKS_H */
