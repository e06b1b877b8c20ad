/*
 * single_file.h - runs single-file checkpoints in the original (LDM) layout
 * (internal). Each component becomes a virtual st_file whose tensors carry
 * diffusers/transformers names and point into the file's float32 views (no
 * copies: renames, (C, C, 1, 1) -> (C, C) reshapes and row ranges of
 * OpenCLIP's fused qkv are all views), plus the config.json that the
 * tensor shapes imply, so the networks are built exactly as for a folder.
 *
 * Mapping (as diffusers' convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
 * convert_ldm_clip_checkpoint and convert_open_clip_checkpoint):
 *   model.diffusion_model.  time_embed.0/2 -> time_embedding.linear_1/2,
 *       input_blocks.0.0 -> conv_in, out.0/2 -> conv_norm_out/conv_out,
 *       input_blocks.i -> down_blocks.(i-1)/(L+1) (resnets .0, attentions .1,
 *       .0.op -> downsamplers.0.conv), middle_block.0/1/2 -> mid_block
 *       resnets.0/attentions.0/resnets.1, output_blocks.i -> up_blocks.i/(L+1)
 *       (.1.conv or .2.conv -> upsamplers.0.conv); resnet in_layers.0/2,
 *       out_layers.0/3, emb_layers.1, skip_connection -> norm1, conv1, norm2,
 *       conv2, time_emb_proj, conv_shortcut. L = layers per block.
 *   first_stage_model.  {encoder,decoder}.down.i.block.j / up.i.block.j ->
 *       down_blocks.i.resnets.j / up_blocks.(n-1-i).resnets.j, downsample /
 *       upsample.conv -> down/upsamplers.0.conv, mid.block_1/2 ->
 *       mid_block.resnets.0/1, mid.attn_1.norm/q/k/v/proj_out ->
 *       mid_block.attentions.0.group_norm/to_q/to_k/to_v/to_out.0 (1x1 conv
 *       weights presented as linears), norm_out -> conv_norm_out,
 *       nin_shortcut -> conv_shortcut.
 *   cond_stage_model.transformer.[text_model.]  (SD 1.x, CLIP) as is.
 *   cond_stage_model.model.  (SD 2.x, OpenCLIP) token_embedding,
 *       positional_embedding, ln_final, transformer.resblocks.i.{ln_1, ln_2,
 *       attn.in_proj_* (rows 0..C, C..2C, 2C..3C -> q/k/v_proj),
 *       attn.out_proj, mlp.c_fc, mlp.c_proj}; the last resblock,
 *       text_projection and logit_scale are dropped (SD 2.x conditions on the
 *       penultimate layer: 23 of 24 layers, as diffusers' folders; a file
 *       with exactly 23 resblocks is taken as already pruned and keeps all).
 *   Tensors under a prefix that fit none of these are ignored with one
 *   warning; tensors outside the three prefixes (model_ema.*,
 *   alphas_cumprod, ...) are not looked at.
 *
 * What the shapes cannot say, and the rule used:
 *   - attention heads: SD 1.x UNets (1x1 conv projections) 8 heads per
 *     level; SD 2.x UNets (linear projections) head dim 64; CLIP/OpenCLIP
 *     text encoders head dim 64. Widths these rules do not divide are
 *     refused (DIFFUSE_ERR_UNSUPPORTED) rather than guessed.
 *   - norm_num_groups 32, norm eps 1e-5 (UNet) / 1e-6 (VAE), layer-norm eps
 *     1e-5, VAE scaling_factor 0.18215, hidden_act quick_gelu (SD 1.x) /
 *     gelu (SD 2.x): the values of every SD 1.x/2.x release.
 *   - prediction type and native size (diffusers' rule for single files):
 *     SD 2.x with a 4-channel UNet is SD 2.1-768: v_prediction, 768 px,
 *     scheduler DDIM as stabilityai/stable-diffusion-2-1 ships it, unless
 *     the file holds an integer "global_step" of 875000 (SD 2.0-base:
 *     epsilon, 512 px). SD 2.x inpainting (9 channels) and all SD 1.x:
 *     epsilon, 512 px; SD 1.x gets SD 1.5's PNDM scheduler config, SD 2.x
 *     DDIM. @pred overrides the prediction type (and with it the SD 2.x
 *     size); there is no public switch for it yet.
 *   - no tokenizer: the model's built-in CLIP vocabulary (model.c).
 */
#ifndef DIFFUSE_MODEL_SINGLE_FILE_H
#define DIFFUSE_MODEL_SINGLE_FILE_H

#include "model/model.h"

typedef enum df_prediction {
    DF_PRED_AUTO = 0,   /* the rule above */
    DF_PRED_EPSILON = 1,
    DF_PRED_V = 2
} df_prediction;

/* For a single-file model whose weights are loaded and exposed as float32
 * (m->comp[*].weights, shared) and whose family is known: builds
 * m->sf_view[] and m->sf_config[], sets m->scheduler_config, m->dims and
 * each component's n_params (counted over its view, so they equal the
 * diffusers folder's). A file with no model.diffusion_model.input_blocks.*
 * tensors is not in the original layout: it stays recognised only (no
 * views; a warning is logged) and DIFFUSE_OK is returned.
 * @return DIFFUSE_OK; DIFFUSE_ERR_MODEL_MISSING_TENSOR (a tensor the layout
 *         needs is absent: the message names the original key);
 *         DIFFUSE_ERR_MODEL_SHAPE (a shape that contradicts the others:
 *         key, found and expected); DIFFUSE_ERR_MODEL_FORMAT (two keys map
 *         to one diffusers name; block counts that do not add up);
 *         DIFFUSE_ERR_UNSUPPORTED (class-conditioned UNets, per-level layer
 *         counts that differ, widths the head rules cannot divide, ...);
 *         DIFFUSE_ERR_OUT_OF_MEMORY. On failure the model is left for
 *         df_model_free (views and configs built so far are freed there). */
diffuse_status df_single_file_map(diffuse_model *m, df_prediction pred, df_error *err);

/* Frees m->sf_view[] and m->sf_config[] (NULL-safe, idempotent). */
void df_single_file_free(diffuse_model *m);

#endif /* DIFFUSE_MODEL_SINGLE_FILE_H */
