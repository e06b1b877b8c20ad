/*
 * transformer2d.h - diffusers' Transformer2DModel as the Stable-Diffusion
 * UNet uses it (continuous input, layer_norm blocks): GroupNorm, proj_in,
 * BasicTransformerBlocks (self-attention, cross-attention on the text
 * states, GEGLU feed-forward), proj_out, residual.
 *
 * Shapes: N batch, C channels of the feature map, HW positions, M = N*HW
 * tokens, D = heads*head_dim inner width, S text tokens, Dc text width.
 */
#ifndef DIFFUSE_NETS_TRANSFORMER2D_H
#define DIFFUSE_NETS_TRANSFORMER2D_H

#include "nets/blocks.h"

/* diffusers Attention with bias-free q/k/v and a biased output projection. */
typedef struct attention_weights {
    nn_linear q;   /* to_q (D, D) */
    nn_linear k;   /* to_k (D, Dkv): Dkv = D (self) or Dc (cross) */
    nn_linear v;   /* to_v (D, Dkv) */
    nn_linear out; /* to_out.0 (D, D) + bias */
} attention_weights;

/* BasicTransformerBlock, norm_type "layer_norm" (eps 1e-5):
 *   h += attn1(LN1(h));  h += attn2(LN2(h), text);  h += ff(LN3(h))
 * ff: ff.net.0.proj (8D, D) -> GEGLU -> ff.net.2 (D, 4D). */
typedef struct transformer_block {
    nn_norm norm1, norm2, norm3; /* (D) */
    attention_weights attn1;     /* self-attention */
    attention_weights attn2;     /* cross-attention */
    nn_linear ff_in;             /* (8D, D) + bias: [h | gate] */
    nn_linear ff_out;            /* (D, 4D) + bias */
} transformer_block;

typedef struct transformer2d {
    int channels;    /* C */
    int heads;       /* attention heads */
    int head_dim;    /* C / heads (integer division, as diffusers) */
    int inner;       /* D = heads * head_dim */
    int cross_dim;   /* Dc */
    int layers;      /* transformer_layers_per_block */
    int groups;      /* GroupNorm groups (norm_num_groups) */
    int linear_proj; /* use_linear_projection: Linear proj_in/out, else 1x1 convs */
    nn_norm norm;    /* GroupNorm (C), eps 1e-6 */
    nn_linear proj_in;  /* (D, C) (+ 1x1 conv dims when !linear_proj) */
    nn_linear proj_out; /* (C, D) */
    transformer_block *blocks; /* (layers), owned */
} transformer2d;

/* Looks up "<base>norm.weight", "<base>proj_in.weight", ...,
 * "<base>transformer_blocks.<i>...." with shape checks.
 * @return DIFFUSE_OK; DIFFUSE_ERR_MODEL_CONFIG (heads > C, groups not dividing
 *         C); DIFFUSE_ERR_MODEL_MISSING_TENSOR; DIFFUSE_ERR_MODEL_SHAPE;
 *         DIFFUSE_ERR_OUT_OF_MEMORY. On failure *t owns nothing. */
diffuse_status transformer2d_load(const nn_source *s, const char *base, int channels, int heads, int cross_dim,
                                  int layers, int groups, int linear_proj, transformer2d *t, df_error *err);
/* Frees the block array (not @t itself). Accepts a zeroed struct. */
void transformer2d_free(transformer2d *t);

/* x (N, C, H, W) += transformer(x, text) in place; text (N, S, Dc) in
 * backend memory. Temporaries: M*(2C + D) floats around the projections,
 * M*D + 4 M*D + 2 N*S*D for an attention, bounded row chunks for the
 * feed-forward; released before returning. */
diffuse_status transformer2d_forward(nn_ctx *c, const transformer2d *t, float *x, const float *text, int seq, int n,
                                     int hw);

#endif /* DIFFUSE_NETS_TRANSFORMER2D_H */
