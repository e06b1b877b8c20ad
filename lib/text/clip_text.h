/*
 * clip_text.h - the CLIP text transformer (transformers' CLIPTextModel) that
 * turns token ids into the hidden states the UNet cross-attends to.
 * Written once against backend.h; weights are looked up by their
 * transformers names in a validated safetensors file.
 */
#ifndef DIFFUSE_CLIP_TEXT_H
#define DIFFUSE_CLIP_TEXT_H

#include "backend.h"
#include "model/safetensors.h"

#include <json-c/json.h>

typedef enum clip_act {
    CLIP_ACT_QUICK_GELU = 0, /* OpenAI CLIP (SD 1.x) */
    CLIP_ACT_GELU = 1        /* OpenCLIP (SD 2.x): exact erf GELU */
} clip_act;

typedef struct clip_text_config {
    int hidden;       /* C: width (768 SD1, 1024 SD2) */
    int intermediate; /* I: MLP width (4C) */
    int heads;        /* H: attention heads; head dim C/H */
    int layers;       /* L: 12 SD1, 23 SD2 */
    int max_positions; /* S_max: 77 */
    int vocab;        /* V: 49408 */
    clip_act act;
    float ln_eps;     /* layer_norm_eps (1e-5) */
} clip_text_config;

/* One encoder layer's weights (PyTorch layouts, float32 views). */
typedef struct clip_layer_weights {
    const float *ln1_w, *ln1_b;       /* (C) */
    const float *q_w, *q_b;           /* (C, C), (C) */
    const float *k_w, *k_b;
    const float *v_w, *v_b;
    const float *o_w, *o_b;
    const float *ln2_w, *ln2_b;       /* (C) */
    const float *fc1_w, *fc1_b;       /* (I, C), (I) */
    const float *fc2_w, *fc2_b;       /* (C, I), (C) */
} clip_layer_weights;

typedef struct clip_text_model {
    clip_text_config cfg;
    const float *tok_emb;             /* (V, C) */
    const float *pos_emb;             /* (S_max, C) */
    const float *final_ln_w, *final_ln_b; /* (C) */
    clip_layer_weights *layer;        /* (L) */
} clip_text_model;

/* Reads the config (transformers CLIPTextConfig JSON) and looks up every
 * weight in @f, checking each shape. Names are "<prefix>text_model.<name>"
 * (transformers 4.x and every released SD checkpoint) or "<prefix><name>"
 * (transformers 5.x's save_pretrained drops the text_model. level).
 * @return DIFFUSE_OK; DIFFUSE_ERR_MODEL_CONFIG (missing/invalid key);
 *         DIFFUSE_ERR_MODEL_MISSING_TENSOR; DIFFUSE_ERR_MODEL_SHAPE;
 *         DIFFUSE_ERR_OUT_OF_MEMORY. Weight pointers stay valid while @f lives. */
diffuse_status clip_text_load(const st_file *f, const char *prefix, const struct json_object *config,
                              clip_text_model **out, df_error *err);
void clip_text_free(clip_text_model *m);

/* Arena bytes clip_text_forward needs for @batch sequences of @seq tokens,
 * including op scratch. */
size_t clip_text_workspace_bytes(const clip_text_config *cfg, int batch, int seq);

/* Runs the encoder on ids (B, S) (host memory) and writes (B, S, C) to @out
 * (backend memory): the hidden state after L - clip_skip layers, through the
 * final layer norm — diffusers' encode_prompt for clip_skip > 0, and
 * last_hidden_state for clip_skip = 0. Takes its activations from the
 * backend's arena and releases them before returning.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (clip_skip >= L, seq >
 *         max_positions, a token id outside the vocabulary); the backend's
 *         status (with its message in bk->err) if an op fails. */
diffuse_status clip_text_forward(const clip_text_model *m, bk_backend *bk, const int32_t *ids, int batch, int seq,
                                 int clip_skip, float *out);

#endif /* DIFFUSE_CLIP_TEXT_H */
