/*
 * model.h - the in-memory form of a loaded checkpoint (internal).
 *
 * A diffuse_model holds its components (unet, vae, text_encoder) as
 * validated, memory-mapped safetensors files plus their parsed config.json,
 * and the tokenizer/scheduler configs. It is immutable after df_model_load()
 * returns and may be read by any number of threads.
 *
 * Two layouts load:
 *  - a diffusers folder: model_index.json names the components; each
 *    component folder has config.json and diffusion_pytorch_model.safetensors
 *    (unet, vae) or model.safetensors (text_encoder), or the `.fp16.` variant
 *    of that name (the plain file wins when both exist). Sharded weights
 *    (*.safetensors.index.json) are refused with DIFFUSE_ERR_UNSUPPORTED.
 *    Each component's config must be valid and its representative tensors
 *    present with the shapes the config implies (conv_in, conv_out, time
 *    embedding; VAE conv_in/conv_out/quant convs; CLIP embeddings, final
 *    norm, every layer's q_proj).
 *  - a single-file original checkpoint (.safetensors with
 *    model.diffusion_model.*, first_stage_model.*, cond_stage_model.* keys).
 *    comp[] describes the file as stored: comp[].config is NULL,
 *    comp[].key_prefix is the component's prefix and all three components
 *    share one st_file. single_file.c adds the diffusers view: sf_view[c],
 *    a virtual st_file per component with diffusers names over the file's
 *    float32 data, and sf_config[c], the config.json its shapes imply; it
 *    also sets scheduler_config and `dims`. The networks are built from
 *    that view. A file recognised by its prefixes but without the original
 *    layout (no model.diffusion_model.input_blocks.*) gets no view, no
 *    networks and zero `dims`.
 *
 * Tensor names: df_model_tensor() takes the diffusers/transformers-5 name of
 * a tensor within its component ("conv_in.weight"; for the text encoder
 * "embeddings.token_embedding.weight", without the "text_model." that
 * transformers 4 and published checkpoints put in front: the loader detects
 * which spelling a file uses and records it in key_prefix). For single-file
 * checkpoints it looks in the diffusers view first, then under key_prefix.
 *
 * JSON files (model_index.json, config.json, scheduler/tokenizer configs)
 * that are unreadable as JSON or lack a required key give
 * DIFFUSE_ERR_MODEL_CONFIG; broken safetensors files DIFFUSE_ERR_MODEL_FORMAT
 * or DIFFUSE_ERR_MODEL_TRUNCATED.
 *
 * Family rule: the UNet's cross_attention_dim decides (768 -> SD1,
 * 1024 -> SD2). For other widths (tiny test models) the text encoder's
 * activation decides: quick_gelu (OpenAI CLIP) -> SD1, gelu (OpenCLIP) -> SD2,
 * anything else UNKNOWN. Single-file: cond_stage_model.transformer.* -> SD1,
 * cond_stage_model.model.* -> SD2.
 */
#ifndef DIFFUSE_MODEL_H
#define DIFFUSE_MODEL_H

#include "common.h"
#include "model/safetensors.h"

#include <json-c/json.h>

typedef enum df_component {
    DF_COMP_UNET = 0,
    DF_COMP_VAE = 1,
    DF_COMP_TEXT_ENCODER = 2,
    DF_COMP_COUNT = 3
} df_component;

/* One network's weights and configuration. */
typedef struct df_model_component {
    char dir[4096];              /* folder it came from ("" for single-file) */
    struct json_object *config;  /* parsed config.json; owned; NULL for single-file */
    st_file *weights;            /* validated safetensors file; owned (shared by all comps for single-file) */
    const char *key_prefix;      /* prefix of its keys inside `weights`: "" in diffusers folders,
                                  * except "text_model." for a text encoder saved by transformers 4 */
    uint64_t n_params;           /* elements of its float tensors */
} df_model_component;

/* Sizes read from the configs (or inferred for single files; zero for a
 * single file recognised only). */
typedef struct df_model_dims {
    int64_t unet_in_channels;    /* 4, or 9 for inpainting */
    int64_t unet_out_channels;
    int64_t unet_sample_size;    /* native latent size */
    int64_t cross_attention_dim; /* text context width the UNet expects */
    int64_t vae_in_channels;     /* image channels (3) */
    int64_t latent_channels;     /* 4 */
    int64_t vae_scale_factor;    /* 2^(len(vae block_out_channels) - 1): 8 */
    int64_t text_hidden_size;
    int64_t text_layers;
    int64_t text_vocab_size;
    int64_t text_max_positions;  /* 77 */
    int v_prediction;            /* scheduler prediction_type is "v_prediction" */
} df_model_dims;

struct diffuse_model {
    char path[4096];
    int single_file;             /* 1: original single-file checkpoint */
    diffuse_model_family family;
    df_model_component comp[DF_COMP_COUNT];
    df_model_dims dims;
    uint64_t weight_bytes;       /* bytes of the weight files on disk */
    struct json_object *scheduler_config; /* may be NULL */
    struct json_object *tokenizer_config; /* may be NULL */
    char tokenizer_dir[4096];    /* "" when the model carries no tokenizer */
    struct df_tokenizer *tokenizer; /* from tokenizer_dir, else the built-in CLIP vocabulary; never NULL after load */
    /* Single-file checkpoints in the original layout (single_file.c): per
     * component, the virtual st_file with diffusers names (its tensors point
     * into comp[c].weights) and the inferred config.json; both owned, NULL
     * otherwise. */
    st_file *sf_view[DF_COMP_COUNT];
    struct json_object *sf_config[DF_COMP_COUNT];
    /* The networks as weight tables over the mapped files (model_nets.c):
     * built at load for diffusers folders and for single files that have a
     * diffusers view; NULL for single files recognised only. */
    struct clip_text_model *text_net;
    struct unet_model *unet_net;
    struct vae_model *vae_net;
    df_logger log;               /* the load's logger (not used after load) */
};

/* Loads @path (a diffusers folder or a single-file .safetensors) into a
 * freshly allocated model: every file validated, every float tensor given a
 * float32 view. @log may be NULL.
 * @return DIFFUSE_OK and *out; otherwise *out is NULL, nothing stays mapped
 *         or allocated, and @err holds the status and a message naming the
 *         file, tensor or key (statuses as documented for diffuse_model_load).
 * Thread-safety: concurrent loads are independent. */
diffuse_status df_model_load(const char *path, const df_logger *log, diffuse_model **out, df_error *err);

/* Load hooks: LOAD progress (step/total: 0, after each weight file's
 * conversion, after the networks are set up); a nonzero return cancels with
 * DIFFUSE_CANCELLED and nothing loaded. */
typedef struct df_load_hooks {
    diffuse_progress_fn progress_fn;
    void *progress_user;
} df_load_hooks;

/* df_model_load with @hooks (may be NULL). */
diffuse_status df_model_load_ex(const char *path, const df_logger *log, const df_load_hooks *hooks,
                                diffuse_model **out, df_error *err);

/* Releases everything the model owns. Accepts NULL. */
void df_model_free(diffuse_model *m);

/* Host memory the model holds once every weight has been used (float32
 * copies plus in-place float32 file pages) and the dtype most of its stored
 * weight bytes have. */
void df_model_memory(const diffuse_model *m, uint64_t *host_bytes, diffuse_weight_type *dtype);
/* The weights as the networks read them (float32): their bytes and how many
 * tensors hold them (what a device backend uploads at most). */
void df_model_f32_weights(const diffuse_model *m, uint64_t *bytes, uint64_t *count);

/* The tensor @name of component @c (the component's key_prefix is put in
 * front of @name), or NULL when absent. Its f32 is a float32 view for
 * F32/F16/BF16 tensors. Valid as long as the model lives; any thread. */
const st_tensor *df_model_tensor(const diffuse_model *m, df_component c, const char *name);

/* "unet", "vae", "text_encoder". */
const char *df_component_name(df_component c);

/* Checks a diffusers component against its config.json and fills the part
 * of m->dims it owns (model_check.c). */
diffuse_status df_model_check_component(diffuse_model *m, df_component c, const char *weights_path,
                                        df_error *err);

/* Builds text_net, unet_net and vae_net from the components (model_nets.c),
 * or from sf_view/sf_config for single files; every weight's presence and
 * shape is checked. Single files without a diffusers view get none. */
diffuse_status df_model_build_nets(diffuse_model *m, df_error *err);
void df_model_free_nets(diffuse_model *m);

/* Cross-checks the components and sets m->family (model_check.c). */
diffuse_status df_model_check_pipeline(diffuse_model *m, df_error *err);

#endif /* DIFFUSE_MODEL_H */
