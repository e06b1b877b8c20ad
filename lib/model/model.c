/*
 * model.c - df_model_load(): finds what a path holds (a diffusers folder or
 * a single-file checkpoint), refuses pickles, opens and validates every
 * weights file and config, and gives each float tensor a float32 view. A
 * failure at any point frees everything, so no model is ever half-loaded.
 */
#include "model/json_util.h"
#include "model/model.h"
#include "model/single_file.h"
#include "text/tokenizer.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const comp_names[DF_COMP_COUNT] = {"unet", "vae", "text_encoder"};

const char *df_component_name(df_component c) {
    return (unsigned)c < DF_COMP_COUNT ? comp_names[c] : "?";
}

/* ---------------------------------------------------------------------- */
/* Paths                                                                  */
/* ---------------------------------------------------------------------- */

/* 0: missing, 1: regular file, 2: directory, 3: something else. */
static int path_kind(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (S_ISREG(st.st_mode)) return 1;
    if (S_ISDIR(st.st_mode)) return 2;
    return 3;
}

static int join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static int ends_with_ci(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    if (k > n) return 0;
    for (size_t i = 0; i < k; i++)
        if (tolower((unsigned char)s[n - k + i]) != tolower((unsigned char)suffix[i])) return 0;
    return 1;
}

static int has_pickle_extension(const char *path) {
    static const char *const ext[] = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (ends_with_ci(path, ext[i])) return 1;
    return 0;
}

static diffuse_status refuse_pickle(const char *path, df_error *err) {
    return df_fail(err, DIFFUSE_ERR_MODEL_UNSAFE,
                   "%s: pickle checkpoints (.ckpt, .pt, .pth, .bin) are refused because unpickling can run "
                   "arbitrary code. Convert it to safetensors with a trusted tool (for example "
                   "safetensors.torch.save_file, or diffusers' convert_original_stable_diffusion_to_diffusers.py "
                   "with --to_safetensors) and load the .safetensors file or folder",
                   path);
}

/* ---------------------------------------------------------------------- */
/* Diffusers folders                                                      */
/* ---------------------------------------------------------------------- */

/* Picks the weights file of component folder @dir: plain name first, then
 * the fp16 variant. Reports sharded or pickle-only folders clearly. */
static diffuse_status pick_weights(const char *dir, const char *stem, char *out, size_t cap, df_error *err) {
    static const char *const variants[] = {"", ".fp16"};
    char p[4200];
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s%s.safetensors", dir, stem, variants[i]);
        if (path_kind(p) == 1) {
            if (strlen(p) >= cap) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: path too long", p);
            df_strlcpy(out, p, cap);
            return DIFFUSE_OK;
        }
    }
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s%s.safetensors.index.json", dir, stem, variants[i]);
        if (path_kind(p) == 1)
            return df_fail(err, DIFFUSE_ERR_UNSUPPORTED,
                           "%s: sharded weights are not supported yet; merge the shards into one %s.safetensors", p,
                           stem);
    }
    const char *pickle_stem = strcmp(stem, "model") == 0 ? "pytorch_model" : stem;
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s%s.bin", dir, pickle_stem, variants[i]);
        if (path_kind(p) == 1) return refuse_pickle(p, err);
    }
    return df_fail(err, DIFFUSE_ERR_NOT_FOUND, "%s: no weights file: expected %s.safetensors (or %s.fp16.safetensors)",
                   dir, stem, stem);
}

/* A component listed in model_index.json as ["library", "Class"]. */
static int index_lists(const struct json_object *index, const char *name) {
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(index, name, &v) || !json_object_is_type(v, json_type_array)) return 0;
    return json_object_array_length(v) == 2 && json_object_array_get_idx(v, 1) != NULL;
}

static diffuse_status load_component(diffuse_model *m, const struct json_object *index, df_component c,
                                     df_error *err) {
    const char *name = comp_names[c];
    df_model_component *mc = &m->comp[c];
    char p[4200], wpath[4200];
    if (!index_lists(index, name))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                       "%s/model_index.json: component \"%s\" is missing or null (a Stable Diffusion pipeline needs "
                       "unet, vae and text_encoder)",
                       m->path, name);
    if (join(mc->dir, sizeof mc->dir, m->path, name) != 0)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: path too long", m->path);
    if (path_kind(mc->dir) != 2)
        return df_fail(err, DIFFUSE_ERR_NOT_FOUND, "%s: component folder missing (model_index.json lists \"%s\")",
                       mc->dir, name);
    join(p, sizeof p, mc->dir, "config.json");
    diffuse_status s = dfj_load_file(p, 1, DIFFUSE_ERR_MODEL_CONFIG, &mc->config, err);
    if (s == DIFFUSE_OK)
        s = pick_weights(mc->dir, c == DF_COMP_TEXT_ENCODER ? "model" : "diffusion_pytorch_model", wpath,
                         sizeof wpath, err);
    if (s == DIFFUSE_OK) s = st_open(wpath, &mc->weights, err);
    mc->key_prefix = "";
    if (s == DIFFUSE_OK) s = df_model_check_component(m, c, wpath, err);
    if (s == DIFFUSE_OK) df_log(&m->log, DIFFUSE_LOG_DEBUG, "%s: %zu tensors", wpath, mc->weights->n_tensors);
    return s;
}

/* Scheduler and tokenizer are optional: recorded when present, and a
 * present but broken config is an error. */
static diffuse_status load_extras(diffuse_model *m, df_error *err) {
    char dir[4200], p[4300];
    diffuse_status s = DIFFUSE_OK;
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", m->path);
    if (path_kind(p) != 0) s = dfj_load_file(p, 1, DIFFUSE_ERR_MODEL_CONFIG, &m->scheduler_config, err);
    else df_log(&m->log, DIFFUSE_LOG_WARN, "%s: no scheduler/scheduler_config.json", m->path);
    if (s != DIFFUSE_OK) return s;
    snprintf(dir, sizeof dir, "%s/tokenizer", m->path);
    if (path_kind(dir) != 2) {
        df_log(&m->log, DIFFUSE_LOG_WARN, "%s: no tokenizer/ folder", m->path);
        return DIFFUSE_OK;
    }
    df_strlcpy(m->tokenizer_dir, dir, sizeof m->tokenizer_dir);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    if (path_kind(p) != 0) s = dfj_load_file(p, 1, DIFFUSE_ERR_MODEL_CONFIG, &m->tokenizer_config, err);
    return s;
}

static diffuse_status load_folder(diffuse_model *m, df_error *err) {
    char p[4200];
    join(p, sizeof p, m->path, "model_index.json");
    if (path_kind(p) != 1) {
        char cfg[4200];
        join(cfg, sizeof cfg, m->path, "config.json");
        return df_fail(err, DIFFUSE_ERR_NOT_FOUND,
                       "%s: folder has no model_index.json, so it is not a diffusers pipeline folder%s", m->path,
                       path_kind(cfg) == 1 ? " (it looks like one component's folder: pass its parent folder)" : "");
    }
    struct json_object *index = NULL;
    diffuse_status s = dfj_load_file(p, 1, DIFFUSE_ERR_MODEL_CONFIG, &index, err);
    if (s == DIFFUSE_OK && index_lists(index, "text_encoder_2"))
        s = df_fail(err, DIFFUSE_ERR_UNSUPPORTED,
                    "%s: pipeline with a second text encoder (SDXL-style, %s); only SD 1.x and 2.x are supported", p,
                    dfj_get_str_opt(index, "_class_name") ? dfj_get_str_opt(index, "_class_name") : "unknown class");
    for (int c = 0; s == DIFFUSE_OK && c < DF_COMP_COUNT; c++) s = load_component(m, index, (df_component)c, err);
    json_object_put(index);
    if (s == DIFFUSE_OK) s = load_extras(m, err);
    if (s == DIFFUSE_OK) s = df_model_check_pipeline(m, err);
    return s;
}

/* ---------------------------------------------------------------------- */
/* Single-file checkpoints                                                */
/* ---------------------------------------------------------------------- */

static size_t count_prefix(const st_file *f, const char *prefix) {
    size_t n = 0, k = strlen(prefix);
    for (size_t i = 0; i < f->n_tensors; i++) n += strncmp(f->tensors[i].name, prefix, k) == 0;
    return n;
}

/* Decides whether @f is an original SD checkpoint and which family. */
static diffuse_status classify_single_file(diffuse_model *m, st_file *f, df_error *err) {
    size_t unet = count_prefix(f, "model.diffusion_model."), vae = count_prefix(f, "first_stage_model.");
    size_t sd1 = count_prefix(f, "cond_stage_model.transformer."), sd2 = count_prefix(f, "cond_stage_model.model.");
    if (unet == 0) {
        const char *hint = st_find(f, "conv_in.weight") || count_prefix(f, "text_model.") ||
                                   st_find(f, "encoder.conv_in.weight")
                               ? " It looks like one component of a diffusers folder: load the folder that holds "
                                 "model_index.json instead."
                               : "";
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                       "%s: valid safetensors, but not a Stable Diffusion checkpoint: expected a single-file "
                       "checkpoint with model.diffusion_model.*, first_stage_model.* and cond_stage_model.* "
                       "tensors, or a diffusers folder with model_index.json.%s",
                       f->path, hint);
    }
    if (count_prefix(f, "conditioner.embedders."))
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED,
                       "%s: SDXL-style checkpoint (conditioner.embedders.*); only SD 1.x and 2.x are supported", f->path);
    if (vae == 0)
        return df_fail(err, DIFFUSE_ERR_MODEL_MISSING_TENSOR, "%s: single-file checkpoint has no first_stage_model.* "
                       "(VAE) tensors", f->path);
    if (sd1 == 0 && sd2 == 0)
        return df_fail(err, DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                       "%s: single-file checkpoint has no cond_stage_model.transformer.* (SD 1.x) or "
                       "cond_stage_model.model.* (SD 2.x) text encoder tensors", f->path);
    if (sd1 && sd2)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                       "%s: both cond_stage_model.transformer.* and cond_stage_model.model.* tensors: ambiguous "
                       "text encoder", f->path);
    m->family = sd1 ? DIFFUSE_FAMILY_SD1 : DIFFUSE_FAMILY_SD2;
    m->comp[DF_COMP_UNET].key_prefix = "model.diffusion_model.";
    m->comp[DF_COMP_VAE].key_prefix = "first_stage_model.";
    m->comp[DF_COMP_TEXT_ENCODER].key_prefix =
        sd2 ? "cond_stage_model.model."
        : count_prefix(f, "cond_stage_model.transformer.text_model.") ? "cond_stage_model.transformer.text_model."
                                                                       : "cond_stage_model.transformer.";
    return DIFFUSE_OK;
}

static diffuse_status load_single_file(diffuse_model *m, df_error *err) {
    if (has_pickle_extension(m->path)) return refuse_pickle(m->path, err);
    st_file *f = NULL;
    diffuse_status s = st_open(m->path, &f, err);
    if (s != DIFFUSE_OK) return s;
    m->single_file = 1;
    for (int c = 0; c < DF_COMP_COUNT; c++) m->comp[c].weights = f; /* shared; freed once */
    return classify_single_file(m, f, err);
}

/* ---------------------------------------------------------------------- */
/* Finishing, lookup, free                                                */
/* ---------------------------------------------------------------------- */

static int seen_before(const diffuse_model *m, int c) {
    for (int i = 0; i < c; i++)
        if (m->comp[i].weights == m->comp[c].weights) return 1;
    return 0;
}

/* LOAD progress @step of @total to the host; DIFFUSE_CANCELLED when it asks. */
static diffuse_status load_progress(const df_load_hooks *h, uint32_t step, uint32_t total, double t0,
                                    df_error *err) {
    if (!h || !h->progress_fn) return DIFFUSE_OK;
    diffuse_progress p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.stage = DIFFUSE_STAGE_LOAD;
    p.step = step;
    p.total = total;
    p.elapsed_seconds = df_now() - t0;
    if (h->progress_fn(&p, h->progress_user))
        return df_fail(err, DIFFUSE_CANCELLED, "loading cancelled by the progress callback at step %u of %u", step,
                       total);
    return DIFFUSE_OK;
}

/* Weight files of the model (single files share one between components). */
static uint32_t count_files(const diffuse_model *m) {
    uint32_t n = 0;
    for (int c = 0; c < DF_COMP_COUNT; c++) n += !seen_before(m, c);
    return n;
}

/* Converts weights to float32 (once per file, LOAD progress after each) and
 * counts parameters. */
static diffuse_status finish(diffuse_model *m, const df_load_hooks *h, double t0, df_error *err) {
    const uint32_t total = count_files(m) + 1;
    uint32_t done = 0;
    diffuse_status s = load_progress(h, 0, total, t0, err);
    for (int c = 0; c < DF_COMP_COUNT && s == DIFFUSE_OK; c++) {
        df_model_component *mc = &m->comp[c];
        if (seen_before(m, c)) continue;
        s = st_expose_f32(mc->weights, err);
        if (s != DIFFUSE_OK) return s;
        m->weight_bytes += mc->weights->map_size;
        s = load_progress(h, ++done, total, t0, err);
    }
    if (s != DIFFUSE_OK) return s;
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        df_model_component *mc = &m->comp[c];
        size_t k = strlen(mc->key_prefix);
        for (size_t i = 0; i < mc->weights->n_tensors; i++) {
            const st_tensor *t = &mc->weights->tensors[i];
            if (st_dtype_is_weight(t->dtype) && strncmp(t->name, mc->key_prefix, k) == 0) mc->n_params += t->numel;
        }
    }
    return DIFFUSE_OK;
}

/* The model's own tokenizer folder, or (single-file checkpoints, folders
 * without tokenizer/) the standard CLIP vocabulary built into the library,
 * with the padding convention of the model's family. */
static diffuse_status load_tokenizer(diffuse_model *m, df_error *err) {
    if (m->tokenizer_dir[0]) {
        diffuse_status s = df_tokenizer_load_dir(m->tokenizer_dir, &m->tokenizer, err);
        return s == DIFFUSE_OK ? s : df_fail_prefix(err, "%s: ", m->tokenizer_dir);
    }
    df_log(&m->log, DIFFUSE_LOG_INFO, "%s: no tokenizer folder; using the built-in CLIP vocabulary", m->path);
    return df_tokenizer_load_builtin(m->family == DIFFUSE_FAMILY_SD2 ? DF_CLIP_SD2 : DF_CLIP_SD1, &m->tokenizer,
                                     err);
}

diffuse_status df_model_load(const char *path, const df_logger *log, diffuse_model **out, df_error *err) {
    return df_model_load_ex(path, log, NULL, out, err);
}

diffuse_status df_model_load_ex(const char *path, const df_logger *log, const df_load_hooks *hooks,
                                diffuse_model **out, df_error *err) {
    const double t0 = df_now();
    if (!out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "df_model_load: out is NULL");
    *out = NULL;
    if (!path || !path[0]) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "model path is NULL or empty");
    if (strlen(path) >= 4000) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "model path is too long");
    diffuse_model *m = calloc(1, sizeof *m);
    if (!m) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory allocating the model");
    df_strlcpy(m->path, path, sizeof m->path);
    for (size_t n = strlen(m->path); n > 1 && m->path[n - 1] == '/'; n--) m->path[n - 1] = '\0';
    if (log) m->log = *log;
    for (int c = 0; c < DF_COMP_COUNT; c++) m->comp[c].key_prefix = "";
    diffuse_status s;
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        s = (e == ENOENT || e == ENOTDIR) ? df_fail(err, DIFFUSE_ERR_NOT_FOUND, "%s: no such file or folder", path)
                                          : df_fail(err, DIFFUSE_ERR_IO, "%s: %s", path, strerror(e));
    } else if (S_ISDIR(st.st_mode)) {
        s = load_folder(m, err);
    } else if (S_ISREG(st.st_mode)) {
        s = load_single_file(m, err);
    } else {
        s = df_fail(err, DIFFUSE_ERR_IO, "%s: neither a regular file nor a folder", path);
    }
    if (s == DIFFUSE_OK) s = finish(m, hooks, t0, err);
    if (s == DIFFUSE_OK && m->single_file) s = df_single_file_map(m, DF_PRED_AUTO, err);
    if (s == DIFFUSE_OK) s = load_tokenizer(m, err);
    if (s == DIFFUSE_OK) s = df_model_build_nets(m, err);
    if (s == DIFFUSE_OK) s = load_progress(hooks, count_files(m) + 1, count_files(m) + 1, t0, err);
    if (s != DIFFUSE_OK) {
        df_model_free(m);
        return s;
    }
    df_log(&m->log, DIFFUSE_LOG_INFO, "%s: loaded %s model (%s), %llu + %llu + %llu parameters", path,
           m->family == DIFFUSE_FAMILY_SD1 ? "SD1" : m->family == DIFFUSE_FAMILY_SD2 ? "SD2" : "unknown-family",
           m->single_file ? "single file" : "diffusers folder", (unsigned long long)m->comp[0].n_params,
           (unsigned long long)m->comp[1].n_params, (unsigned long long)m->comp[2].n_params);
    *out = m;
    return DIFFUSE_OK;
}

void df_model_free(diffuse_model *m) {
    if (!m) return;
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        json_object_put(m->comp[c].config);
        if (!seen_before(m, c)) st_close(m->comp[c].weights);
    }
    json_object_put(m->scheduler_config);
    json_object_put(m->tokenizer_config);
    df_tokenizer_free(m->tokenizer);
    df_model_free_nets(m);
    df_single_file_free(m);
    free(m);
}

const st_tensor *df_model_tensor(const diffuse_model *m, df_component c, const char *name) {
    if (!m || !name || (unsigned)c >= DF_COMP_COUNT || !m->comp[c].weights) return NULL;
    const st_tensor *v = m->sf_view[c] ? st_find(m->sf_view[c], name) : NULL;
    if (v) return v;
    const char *prefix = m->comp[c].key_prefix ? m->comp[c].key_prefix : "";
    if (!prefix[0]) return st_find(m->comp[c].weights, name);
    char full[512];
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    if (n < 0 || (size_t)n >= sizeof full) return NULL;
    return st_find(m->comp[c].weights, full);
}

void df_model_f32_weights(const diffuse_model *m, uint64_t *bytes, uint64_t *count) {
    *bytes = *count = 0;
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        const st_file *f = m->comp[c].weights;
        int seen = 0; /* single files share one st_file between components */
        for (int d = 0; d < c; d++) seen |= m->comp[d].weights == f;
        if (!f || seen) continue;
        for (size_t i = 0; i < f->n_tensors; i++)
            if (st_dtype_is_weight(f->tensors[i].dtype)) {
                *bytes += (uint64_t)f->tensors[i].numel * sizeof(float);
                *count += 1;
            }
    }
}

void df_model_memory(const diffuse_model *m, uint64_t *host_bytes, diffuse_weight_type *dtype) {
    size_t host = 0, by_dtype[ST_DTYPE_COUNT] = {0};
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        const st_file *f = m->comp[c].weights;
        int seen = 0; /* single files share one st_file between components */
        for (int d = 0; d < c; d++) seen |= m->comp[d].weights == f;
        if (f && !seen) st_memory(f, &host, by_dtype);
    }
    *host_bytes = host;
    *dtype = DIFFUSE_WEIGHTS_F32;
    size_t best = by_dtype[ST_F32];
    if (by_dtype[ST_F16] > best) *dtype = DIFFUSE_WEIGHTS_F16, best = by_dtype[ST_F16];
    if (by_dtype[ST_BF16] > best) *dtype = DIFFUSE_WEIGHTS_BF16;
}
