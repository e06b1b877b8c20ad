/*
 * sched_config.c - turns a scheduler_config.json plus the sampler the user
 * picked into a sched_config, the way diffusers' XScheduler.from_config
 * does: the keys the target scheduler knows are read, unknown keys are
 * ignored, missing keys (or null) take that scheduler's own defaults.
 * Options the library does not implement are refused with a message that
 * names the key, rather than silently giving a different image.
 */
#include "sched/sched_internal.h"

#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CFG_FILE "scheduler_config.json"

static const char *const k_class_names[] = {
    [SCHED_DDIM] = "DDIMScheduler",
    [SCHED_DDPM] = "DDPMScheduler",
    [SCHED_PNDM] = "PNDMScheduler",
    [SCHED_LMS] = "LMSDiscreteScheduler",
    [SCHED_EULER] = "EulerDiscreteScheduler",
    [SCHED_EULER_A] = "EulerAncestralDiscreteScheduler",
    [SCHED_HEUN] = "HeunDiscreteScheduler",
    [SCHED_DPM] = "DPMSolverMultistepScheduler",
    [SCHED_UNIPC] = "UniPCMultistepScheduler",
};

const char *sched_kind_class(sched_kind kind) {
    return k_class_names[kind];
}

/* ------------------------------------------------------------------------ */
/* Typed reads; a missing key or null gives the default                       */
/* ------------------------------------------------------------------------ */

static struct json_object *cfg_get(const struct json_object *cfg, const char *key) {
    struct json_object *v = NULL;
    if (!json_object_object_get_ex((struct json_object *)cfg, key, &v)) return NULL;
    return json_object_get_type(v) == json_type_null ? NULL : v;
}

static diffuse_status cfg_num(const struct json_object *cfg, const char *key, double def, double *out,
                              df_error *err) {
    struct json_object *v = cfg_get(cfg, key);
    *out = def;
    if (!v) return DIFFUSE_OK;
    json_type t = json_object_get_type(v);
    if (t != json_type_double && t != json_type_int)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, CFG_FILE ": key \"%s\" must be a number, found %s", key,
                       json_type_to_name(t));
    *out = json_object_get_double(v);
    return DIFFUSE_OK;
}

static diffuse_status cfg_int(const struct json_object *cfg, const char *key, int def, int lo, int hi, int *out,
                              df_error *err) {
    struct json_object *v = cfg_get(cfg, key);
    *out = def;
    if (!v) return DIFFUSE_OK;
    int64_t x = json_object_get_int64(v);
    if (json_object_get_type(v) != json_type_int || x < lo || x > hi)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, CFG_FILE ": key \"%s\" must be an integer in [%d, %d]", key,
                       lo, hi);
    *out = (int)x;
    return DIFFUSE_OK;
}

static diffuse_status cfg_bool(const struct json_object *cfg, const char *key, int def, int *out, df_error *err) {
    struct json_object *v = cfg_get(cfg, key);
    *out = def;
    if (!v) return DIFFUSE_OK;
    json_type t = json_object_get_type(v);
    if (t != json_type_boolean && t != json_type_int)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, CFG_FILE ": key \"%s\" must be true or false, found %s", key,
                       json_type_to_name(t));
    *out = json_object_get_int(v) != 0;
    return DIFFUSE_OK;
}

/* String value of @key; @def when missing; NULL (with the error set) when
 * it is not a string. */
static const char *cfg_str(const struct json_object *cfg, const char *key, const char *def, df_error *err) {
    struct json_object *v = cfg_get(cfg, key);
    if (!v) return def;
    if (json_object_get_type(v) != json_type_string) {
        df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, CFG_FILE ": key \"%s\" must be a string", key);
        return NULL;
    }
    return json_object_get_string(v);
}

/* Picks @value's index in the NULL-terminated @names, or fails naming @key. */
static diffuse_status cfg_enum(const char *key, const char *value, const char *const *names, int *out,
                               diffuse_status bad, const char *cls, df_error *err) {
    if (!value) return err ? err->status : DIFFUSE_ERR_MODEL_CONFIG;
    for (int k = 0; names[k]; k++)
        if (strcmp(value, names[k]) == 0) {
            *out = k;
            return DIFFUSE_OK;
        }
    return df_fail(err, bad, CFG_FILE ": %s \"%s\" is not supported by %s", key, value, cls);
}

/* A boolean option this library does not implement must be false. */
static diffuse_status cfg_refuse_true(const struct json_object *cfg, const char *key, const char *cls,
                                      df_error *err) {
    int v = 0;
    diffuse_status st = cfg_bool(cfg, key, 0, &v, err);
    if (st != DIFFUSE_OK) return st;
    if (v) return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, CFG_FILE ": %s with %s = true is not supported", cls, key);
    return DIFFUSE_OK;
}

#define TRY(expr)                                  \
    do {                                           \
        diffuse_status st_ = (expr);               \
        if (st_ != DIFFUSE_OK) return st_;         \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Keys every scheduler reads                                                 */
/* ------------------------------------------------------------------------ */

static diffuse_status read_trained_betas(const struct json_object *cfg, sched_config *c, df_error *err) {
    struct json_object *v = cfg_get(cfg, "trained_betas");
    if (!v) return DIFFUSE_OK;
    if (json_object_get_type(v) != json_type_array ||
        json_object_array_length(v) != (size_t)c->num_train_timesteps)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                       CFG_FILE ": trained_betas must be an array of num_train_timesteps (%d) numbers",
                       c->num_train_timesteps);
    c->trained_betas = malloc(sizeof(float) * (size_t)c->num_train_timesteps);
    if (!c->trained_betas) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for trained_betas");
    for (int t = 0; t < c->num_train_timesteps; t++) {
        struct json_object *e = json_object_array_get_idx(v, (size_t)t);
        json_type ty = json_object_get_type(e);
        if (ty != json_type_double && ty != json_type_int)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, CFG_FILE ": trained_betas[%d] is not a number", t);
        c->trained_betas[t] = (float)json_object_get_double(e);
    }
    c->betas = BETAS_TRAINED;
    return DIFFUSE_OK;
}

static diffuse_status read_common(const struct json_object *cfg, sched_config *c, df_error *err) {
    static const char *const betas[] = {"linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", NULL};
    static const char *const preds[] = {"epsilon", "v_prediction", "sample", NULL};
    static const char *const spacings[] = {"leading", "linspace", "trailing", NULL};
    const char *cls = k_class_names[c->kind];
    int heun = c->kind == SCHED_HEUN, alpha_based = c->kind <= SCHED_PNDM;
    int v = 0;
    TRY(cfg_int(cfg, "num_train_timesteps", 1000, 2, 100000, &c->num_train_timesteps, err));
    TRY(cfg_num(cfg, "beta_start", heun ? 0.00085 : 0.0001, &c->beta_start, err));
    TRY(cfg_num(cfg, "beta_end", heun ? 0.012 : 0.02, &c->beta_end, err));
    TRY(cfg_enum("beta_schedule", cfg_str(cfg, "beta_schedule", "linear", err), betas, &v, DIFFUSE_ERR_UNSUPPORTED,
                 cls, err));
    if (v == BETAS_SIGMOID && c->kind != SCHED_DDPM)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, CFG_FILE ": beta_schedule \"sigmoid\" is not supported by %s", cls);
    c->betas = (sched_betas)v;
    TRY(read_trained_betas(cfg, c, err));
    TRY(cfg_enum("prediction_type", cfg_str(cfg, "prediction_type", "epsilon", err), preds, &v,
                 DIFFUSE_ERR_UNSUPPORTED, cls, err));
    c->pred = (sched_pred)v;
    if (c->pred == PRED_SAMPLE && (c->kind == SCHED_PNDM || c->kind == SCHED_EULER_A))
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, CFG_FILE ": prediction_type \"sample\" is not supported by %s",
                       cls);
    TRY(cfg_enum("timestep_spacing", cfg_str(cfg, "timestep_spacing", alpha_based ? "leading" : "linspace", err),
                 spacings, &v, DIFFUSE_ERR_UNSUPPORTED, cls, err));
    c->spacing = (sched_spacing)v;
    TRY(cfg_int(cfg, "steps_offset", 0, 0, 100000, &c->steps_offset, err));
    if (c->kind != SCHED_PNDM && c->kind != SCHED_LMS && c->kind != SCHED_HEUN)
        TRY(cfg_bool(cfg, "rescale_betas_zero_snr", 0, &c->rescale_zero_snr, err));
    if (c->kind == SCHED_DDIM || c->kind == SCHED_DDPM || c->kind == SCHED_DPM || c->kind == SCHED_UNIPC)
        TRY(cfg_refuse_true(cfg, "thresholding", cls, err));
    return DIFFUSE_OK;
}

/* use_karras_sigmas and the sigma-family options (LMS, Euler, Heun, DPM, UniPC). */
static diffuse_status read_sigma_options(const struct json_object *cfg, sched_config *c, df_error *err) {
    const char *cls = k_class_names[c->kind];
    TRY(cfg_bool(cfg, "use_karras_sigmas", 0, &c->use_karras, err));
    TRY(cfg_refuse_true(cfg, "use_exponential_sigmas", cls, err));
    TRY(cfg_refuse_true(cfg, "use_beta_sigmas", cls, err));
    if (c->kind == SCHED_EULER || c->kind == SCHED_UNIPC) {
        TRY(cfg_num(cfg, "sigma_min", NAN, &c->sigma_min, err));
        TRY(cfg_num(cfg, "sigma_max", NAN, &c->sigma_max, err));
    }
    if (c->kind == SCHED_EULER || c->kind == SCHED_DPM || c->kind == SCHED_UNIPC) {
        static const char *const finals[] = {"zero", "sigma_min", NULL};
        TRY(cfg_enum("final_sigmas_type", cfg_str(cfg, "final_sigmas_type", "zero", err), finals,
                     &c->final_sigma_min, DIFFUSE_ERR_MODEL_CONFIG, cls, err));
    }
    if (c->kind == SCHED_DPM || c->kind == SCHED_UNIPC) {
        TRY(cfg_refuse_true(cfg, "use_flow_sigmas", cls, err));
        TRY(cfg_refuse_true(cfg, "use_dynamic_shifting", cls, err));
        TRY(cfg_bool(cfg, "lower_order_final", 1, &c->lower_order_final, err));
        TRY(cfg_int(cfg, "solver_order", 2, 1, 3, &c->solver_order, err));
    }
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* Keys of one scheduler                                                      */
/* ------------------------------------------------------------------------ */

static diffuse_status read_euler(const struct json_object *cfg, sched_config *c, df_error *err) {
    const char *interp = cfg_str(cfg, "interpolation_type", "linear", err);
    if (!interp) return err->status;
    if (strcmp(interp, "linear") != 0)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, CFG_FILE ": interpolation_type \"%s\" is not supported", interp);
    const char *type = cfg_str(cfg, "timestep_type", "discrete", err);
    if (!type) return err->status;
    if (strcmp(type, "continuous") == 0 && c->pred == PRED_V)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, CFG_FILE ": timestep_type \"continuous\" is not supported");
    return DIFFUSE_OK;
}

static diffuse_status read_ddpm(const struct json_object *cfg, sched_config *c, df_error *err) {
    static const char *const vars[] = {"fixed_small", "fixed_small_log", "fixed_large", NULL};
    int v = 0;
    TRY(cfg_enum("variance_type", cfg_str(cfg, "variance_type", "fixed_small", err), vars, &v,
                 DIFFUSE_ERR_UNSUPPORTED, "DDPMScheduler", err));
    c->variance = (sched_variance)v;
    return DIFFUSE_OK;
}

static diffuse_status read_dpm(const struct json_object *cfg, sched_config *c, df_error *err) {
    static const char *const algos[] = {"dpmsolver++", "sde-dpmsolver++", "deis", NULL};
    static const char *const solvers[] = {"midpoint", "heun", "logrho", "bh1", "bh2", NULL};
    int v = 0;
    TRY(cfg_enum("algorithm_type", cfg_str(cfg, "algorithm_type", "dpmsolver++", err), algos, &v,
                 DIFFUSE_ERR_UNSUPPORTED, "DPMSolverMultistepScheduler", err));
    c->sde = v == 1; /* "deis" becomes dpmsolver++, as diffusers registers it */
    TRY(cfg_enum("solver_type", cfg_str(cfg, "solver_type", "midpoint", err), solvers, &v, DIFFUSE_ERR_MODEL_CONFIG,
                 "DPMSolverMultistepScheduler", err));
    c->solver_heun = v == 1; /* logrho/bh1/bh2 become midpoint */
    TRY(cfg_bool(cfg, "euler_at_final", 0, &c->euler_at_final, err));
    TRY(cfg_num(cfg, "lambda_min_clipped", -INFINITY, &c->lambda_min_clipped, err));
    TRY(cfg_refuse_true(cfg, "use_lu_lambdas", "DPMSolverMultistepScheduler", err));
    struct json_object *var = cfg_get(cfg, "variance_type"); /* learned variance needs 2x channels */
    if (var)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, CFG_FILE ": DPMSolverMultistepScheduler variance_type %s is not supported",
                       json_object_to_json_string(var));
    return DIFFUSE_OK;
}

static diffuse_status read_unipc(const struct json_object *cfg, sched_config *c, df_error *err) {
    static const char *const solvers[] = {"bh1", "bh2", "midpoint", "heun", "logrho", NULL};
    int v = 0;
    TRY(cfg_bool(cfg, "predict_x0", 1, &c->predict_x0, err));
    TRY(cfg_enum("solver_type", cfg_str(cfg, "solver_type", "bh2", err), solvers, &v, DIFFUSE_ERR_MODEL_CONFIG,
                 "UniPCMultistepScheduler", err));
    c->bh1 = v == 0; /* midpoint/heun/logrho become bh2 */
    struct json_object *dc = cfg_get(cfg, "disable_corrector");
    if (!dc) return DIFFUSE_OK;
    if (json_object_get_type(dc) != json_type_array || json_object_array_length(dc) > SCHED_MAX_DISABLED)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, CFG_FILE ": disable_corrector must be a list of step indices");
    c->n_disable_corrector = (int)json_object_array_length(dc);
    for (int k = 0; k < c->n_disable_corrector; k++)
        c->disable_corrector[k] = json_object_get_int(json_object_array_get_idx(dc, (size_t)k));
    return DIFFUSE_OK;
}

static diffuse_status read_kind(const struct json_object *cfg, sched_config *c, df_error *err) {
    const char *cls = k_class_names[c->kind];
    TRY(read_common(cfg, c, err));
    switch (c->kind) {
    case SCHED_DDIM:
        TRY(cfg_bool(cfg, "clip_sample", 1, &c->clip_sample, err));
        TRY(cfg_num(cfg, "clip_sample_range", 1.0, &c->clip_sample_range, err));
        return cfg_bool(cfg, "set_alpha_to_one", 1, &c->set_alpha_to_one, err);
    case SCHED_DDPM:
        TRY(cfg_bool(cfg, "clip_sample", 1, &c->clip_sample, err));
        TRY(cfg_num(cfg, "clip_sample_range", 1.0, &c->clip_sample_range, err));
        return read_ddpm(cfg, c, err);
    case SCHED_PNDM: return cfg_bool(cfg, "set_alpha_to_one", 0, &c->set_alpha_to_one, err);
    case SCHED_EULER_A: return DIFFUSE_OK;
    case SCHED_LMS: return read_sigma_options(cfg, c, err);
    case SCHED_EULER:
        TRY(read_sigma_options(cfg, c, err));
        return read_euler(cfg, c, err);
    case SCHED_HEUN:
        TRY(read_sigma_options(cfg, c, err));
        TRY(cfg_bool(cfg, "clip_sample", 0, &c->clip_sample, err));
        return cfg_num(cfg, "clip_sample_range", 1.0, &c->clip_sample_range, err);
    case SCHED_DPM:
        TRY(read_sigma_options(cfg, c, err));
        return read_dpm(cfg, c, err);
    case SCHED_UNIPC:
        TRY(read_sigma_options(cfg, c, err));
        return read_unipc(cfg, c, err);
    }
    return df_fail(err, DIFFUSE_ERR_INTERNAL, "unknown scheduler kind for %s", cls);
}

/* ------------------------------------------------------------------------ */
/* Sampler choice                                                             */
/* ------------------------------------------------------------------------ */

static diffuse_status kind_of_class(const struct json_object *cfg, sched_kind *kind, df_error *err) {
    const char *name = cfg_str(cfg, "_class_name", NULL, err);
    if (!name)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                       CFG_FILE ": no \"_class_name\" string to say which scheduler the model uses");
    for (int k = 0; k <= SCHED_UNIPC; k++)
        if (strcmp(name, k_class_names[k]) == 0) {
            *kind = (sched_kind)k;
            return DIFFUSE_OK;
        }
    return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, CFG_FILE ": scheduler %s is not supported; pick a sampler", name);
}

diffuse_status sched_config_resolve(const struct json_object *config, diffuse_sampler sampler, sched_config *out,
                                    df_error *err) {
    static const sched_kind kinds[] = {
        [DIFFUSE_SAMPLER_DDIM] = SCHED_DDIM,      [DIFFUSE_SAMPLER_DDPM] = SCHED_DDPM,
        [DIFFUSE_SAMPLER_PNDM] = SCHED_PNDM,      [DIFFUSE_SAMPLER_LMS] = SCHED_LMS,
        [DIFFUSE_SAMPLER_EULER] = SCHED_EULER,    [DIFFUSE_SAMPLER_EULER_A] = SCHED_EULER_A,
        [DIFFUSE_SAMPLER_HEUN] = SCHED_HEUN,      [DIFFUSE_SAMPLER_DPMPP_2M] = SCHED_DPM,
        [DIFFUSE_SAMPLER_DPMPP_2M_KARRAS] = SCHED_DPM, [DIFFUSE_SAMPLER_DPMPP_SDE] = SCHED_DPM,
        [DIFFUSE_SAMPLER_UNIPC] = SCHED_UNIPC,
    };
    memset(out, 0, sizeof *out);
    if (!config || json_object_get_type((struct json_object *)config) != json_type_object)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "scheduler config must be a JSON object");
    if (sampler == DIFFUSE_SAMPLER_DEFAULT) {
        TRY(kind_of_class(config, &out->kind, err));
    } else if ((int)sampler > 0 && (int)sampler <= DIFFUSE_SAMPLER_UNIPC) {
        out->kind = kinds[sampler];
    } else {
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "unknown sampler %d", (int)sampler);
    }
    diffuse_status st = read_kind(config, out, err);
    if (st != DIFFUSE_OK) {
        sched_config_clear(out);
        return st;
    }
    if (sampler == DIFFUSE_SAMPLER_DPMPP_2M || sampler == DIFFUSE_SAMPLER_DPMPP_2M_KARRAS) {
        out->sde = 0;
        out->solver_order = 2;
        out->use_karras = sampler == DIFFUSE_SAMPLER_DPMPP_2M_KARRAS;
    } else if (sampler == DIFFUSE_SAMPLER_DPMPP_SDE) {
        out->sde = 1;
        out->solver_order = 2;
    }
    return DIFFUSE_OK;
}

void sched_config_clear(sched_config *cfg) {
    if (!cfg) return;
    free(cfg->trained_betas);
    cfg->trained_betas = NULL;
}
