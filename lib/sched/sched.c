/*
 * sched.c - the sampler object (see sched.h): creation from a scheduler
 * config, the per-evaluation entry points that check their arguments and
 * dispatch to the step of each scheduler, model-input scaling, add_noise
 * and the img2img start rule, and the history/noise helpers the step files
 * share.
 */
#include "sched/sched_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                   */
/* ------------------------------------------------------------------------ */

static diffuse_status alloc_state(sched *s, df_error *err) {
    /* SCHED_MAX_HIST history arrays + saved + noise + tmp, one slab */
    size_t per = s->numel, total;
    if (df_mul_size(per, SCHED_MAX_HIST + 3, &total) || total > SIZE_MAX / sizeof(float))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "latent size %zu too large", s->numel);
    float *slab = s->slab = malloc(total * sizeof(float));
    if (!slab) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for sampler state (%zu floats)", total);
    for (int k = 0; k < SCHED_MAX_HIST; k++) s->hist[k] = slab + (size_t)k * per;
    s->saved = slab + (size_t)SCHED_MAX_HIST * per;
    s->noise = s->saved + per;
    s->tmp = s->noise + per;
    return DIFFUSE_OK;
}

diffuse_status sched_create(const struct json_object *config, diffuse_sampler sampler, int steps, size_t numel,
                            sched **out, df_error *err) {
    if (!out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_create: out is NULL");
    *out = NULL;
    if (steps < 1) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sampler steps must be >= 1, got %d", steps);
    if (numel == 0) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sampler latent size is 0");
    sched *s = calloc(1, sizeof *s);
    if (!s) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for the sampler");
    diffuse_status st = sched_config_resolve(config, sampler, &s->cfg, err);
    if (st == DIFFUSE_OK && steps > s->cfg.num_train_timesteps)
        st = df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "%d sampler steps exceed num_train_timesteps (%d)", steps,
                     s->cfg.num_train_timesteps);
    s->steps = steps;
    s->numel = numel;
    if (st == DIFFUSE_OK) st = sched_build_alphas(s, err);
    if (st == DIFFUSE_OK) st = sched_build_timesteps(s, err);
    if (st == DIFFUSE_OK) st = alloc_state(s, err);
    if (st != DIFFUSE_OK) {
        sched_free(s);
        return st;
    }
    sched_reset(s);
    *out = s;
    return DIFFUSE_OK;
}

void sched_free(sched *s) {
    if (!s) return;
    sched_config_clear(&s->cfg);
    free(s->alphas_cumprod);
    free(s->timesteps);
    free(s->sigmas);
    free(s->slab);
    free(s);
}

void sched_reset(sched *s) {
    if (!s) return;
    s->started = 0;
    s->next = 0;
    s->n_hist = 0;
    s->has_saved = 0;
    s->counter = 0;
    s->heun_second = 0;
    s->heun_dt = 0.0f;
    s->lower_order_nums = 0;
    s->this_order = 0;
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                  */
/* ------------------------------------------------------------------------ */

size_t sched_num_evals(const sched *s) { return s ? s->n_evals : 0; }
int sched_order(const sched *s) { return s ? s->order : 1; }
float sched_init_noise_sigma(const sched *s) { return s ? s->init_noise_sigma : 1.0f; }
const char *sched_class_name(const sched *s) { return s ? sched_kind_class(s->cfg.kind) : ""; }

double sched_timestep(const sched *s, size_t i) {
    return s && i < s->n_evals ? s->timesteps[i] : NAN;
}

const float *sched_sigmas(const sched *s, size_t *n) {
    if (n) *n = s ? s->n_sigmas : 0;
    return s ? s->sigmas : NULL;
}

int sched_needs_rng(const sched *s) {
    if (!s) return 0;
    switch (s->cfg.kind) {
    case SCHED_DDIM: return s->eta > 0.0;
    case SCHED_DDPM:
    case SCHED_EULER_A: return 1;
    case SCHED_DPM: return s->cfg.sde;
    default: return 0;
    }
}

diffuse_status sched_set_eta(sched *s, double eta, df_error *err) {
    if (!s) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_set_eta: sampler is NULL");
    if (!(eta >= 0.0) || isinf(eta))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "DDIM eta must be finite and >= 0, got %g", eta);
    s->eta = eta;
    return DIFFUSE_OK;
}

diffuse_status sched_img2img_start(const sched *s, double strength, size_t *first, df_error *err) {
    if (!s || !first) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_img2img_start: NULL argument");
    if (!(strength > 0.0 && strength <= 1.0))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "strength must be in (0, 1], got %g", strength);
    int init = (int)((double)s->steps * strength);
    if (init > s->steps) init = s->steps;
    size_t start = (size_t)(s->steps - init) * (size_t)s->order;
    if (init < 1 || start >= s->n_evals)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "strength %g leaves no denoising step of %d", strength,
                       s->steps);
    *first = start;
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* Helpers for the step files                                                */
/* ------------------------------------------------------------------------ */

float *sched_hist_push(sched *s, int cap) {
    if (s->n_hist < cap) return s->hist[s->n_hist++];
    float *oldest = s->hist[0];
    memmove(s->hist, s->hist + 1, sizeof(float *) * (size_t)(cap - 1));
    s->hist[cap - 1] = oldest;
    return oldest;
}

const float *sched_hist_back(const sched *s, int k) {
    return s->hist[s->n_hist - 1 - k];
}

float sched_clip(const sched *s, float v) {
    if (!s->cfg.clip_sample) return v;
    float r = (float)s->cfg.clip_sample_range;
    return v < -r ? -r : v > r ? r : v;
}

void sched_sigma_to_alpha_sigma(float sigma, float *alpha_t, float *sigma_t) {
    *alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sigma_t = sigma * *alpha_t;
}

/* Whether evaluation @i draws noise (DDPM skips it at t = 0). */
static int step_needs_noise(const sched *s, size_t i) {
    return sched_needs_rng(s) && !(s->cfg.kind == SCHED_DDPM && s->timesteps[i] <= 0.0);
}

/* randn of the whole batch: image k's share from rngs[k]. */
static void draw_noise(sched *s, df_rng *rngs, size_t n_rngs) {
    size_t per = s->numel / n_rngs;
    for (size_t k = 0; k < n_rngs; k++) df_rng_randn(&rngs[k], s->noise + k * per, per);
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                               */
/* ------------------------------------------------------------------------ */

diffuse_status sched_scale_model_input(const sched *s, size_t i, const float *x, float *out, df_error *err) {
    if (!s || !x || !out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_scale_model_input: NULL argument");
    if (i >= s->n_evals)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "evaluation %zu out of range (%zu)", i, s->n_evals);
    switch (s->cfg.kind) {
    case SCHED_LMS:
    case SCHED_EULER:
    case SCHED_EULER_A:
    case SCHED_HEUN: {
        float sigma = s->sigmas[i];
        float d = sqrtf(sigma * sigma + 1.0f);
        for (size_t j = 0; j < s->numel; j++) out[j] = x[j] / d;
        return DIFFUSE_OK;
    }
    default:
        if (out != x) memmove(out, x, s->numel * sizeof(float));
        return DIFFUSE_OK;
    }
}

diffuse_status sched_step(sched *s, size_t i, const float *model_output, const float *x, df_rng *rngs,
                          size_t n_rngs, float *out, df_error *err) {
    if (!s || !model_output || !x || !out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_step: NULL argument");
    if (i >= s->n_evals || (s->started && i != s->next))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_step: evaluation %zu out of order (expected %zu of %zu)",
                       i, s->started ? s->next : 0, s->n_evals);
    if (step_needs_noise(s, i)) {
        if (!rngs || n_rngs == 0)
            return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "%s draws noise: pass a generator (one per image)",
                           sched_kind_class(s->cfg.kind));
        if (s->numel % n_rngs != 0)
            return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "%zu latent floats do not split into %zu images",
                           s->numel, n_rngs);
        draw_noise(s, rngs, n_rngs);
    }
    switch (s->cfg.kind) {
    case SCHED_DDIM: sched_ddim_step(s, i, model_output, x, out); break;
    case SCHED_DDPM: sched_ddpm_step(s, i, model_output, x, out); break;
    case SCHED_PNDM: sched_pndm_step(s, i, model_output, x, out); break;
    case SCHED_LMS: sched_lms_step(s, i, model_output, x, out); break;
    case SCHED_EULER: sched_euler_step(s, i, model_output, x, out); break;
    case SCHED_EULER_A: sched_euler_a_step(s, i, model_output, x, out); break;
    case SCHED_HEUN: sched_heun_step(s, i, model_output, x, out); break;
    case SCHED_DPM: sched_dpm_step(s, i, model_output, x, out); break;
    case SCHED_UNIPC: sched_unipc_step(s, i, model_output, x, out); break;
    }
    s->started = 1;
    s->next = i + 1;
    return DIFFUSE_OK;
}

diffuse_status sched_add_noise(const sched *s, size_t i, const float *x0, const float *noise, float *out,
                               df_error *err) {
    if (!s || !x0 || !noise || !out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_add_noise: NULL argument");
    if (i >= s->n_evals)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "evaluation %zu out of range (%zu)", i, s->n_evals);
    float a, b;
    switch (s->cfg.kind) {
    case SCHED_DDIM:
    case SCHED_DDPM:
    case SCHED_PNDM: {
        float ac = s->alphas_cumprod[(int)s->timesteps[i]];
        a = sqrtf(ac);
        b = sqrtf(1.0f - ac);
        break;
    }
    case SCHED_DPM:
    case SCHED_UNIPC: sched_sigma_to_alpha_sigma(s->sigmas[i], &a, &b); break;
    default: { /* k-diffusion: x0 + noise * sigma */
        float sigma = s->sigmas[i];
        for (size_t j = 0; j < s->numel; j++) out[j] = x0[j] + noise[j] * sigma;
        return DIFFUSE_OK;
    }
    }
    for (size_t j = 0; j < s->numel; j++) out[j] = a * x0[j] + b * noise[j];
    return DIFFUSE_OK;
}

diffuse_status sched_predict_x0(const sched *s, size_t i, const float *x, const float *model_output, float *out,
                                df_error *err) {
    if (!s || !x || !model_output || !out)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "sched_predict_x0: NULL argument");
    if (i >= s->n_evals)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "evaluation %zu out of range (%zu)", i, s->n_evals);
    float a, b; /* x = a x0 + b eps in the sampler's own scaling */
    switch (s->cfg.kind) {
    case SCHED_DDIM:
    case SCHED_DDPM:
    case SCHED_PNDM: {
        const float ac = s->alphas_cumprod[(int)s->timesteps[i]];
        a = sqrtf(ac);
        b = sqrtf(1.0f - ac);
        break;
    }
    case SCHED_DPM:
    case SCHED_UNIPC: sched_sigma_to_alpha_sigma(s->sigmas[i], &a, &b); break;
    default: { /* k-diffusion: x = x0 + sigma eps; the model sees x / sqrt(sigma^2 + 1) */
        const float sg = s->sigmas[i], c = 1.0f / sqrtf(sg * sg + 1.0f);
        for (size_t j = 0; j < s->numel; j++)
            out[j] = s->cfg.pred == PRED_V ? model_output[j] * (-sg * c) + x[j] * c * c
                   : s->cfg.pred == PRED_SAMPLE ? model_output[j]
                                                : x[j] - sg * model_output[j];
        return DIFFUSE_OK;
    }
    }
    for (size_t j = 0; j < s->numel; j++)
        out[j] = s->cfg.pred == PRED_V       ? a * x[j] - b * model_output[j]
               : s->cfg.pred == PRED_SAMPLE ? model_output[j]
                                            : (x[j] - b * model_output[j]) / (a > 1e-12f ? a : 1e-12f);
    return DIFFUSE_OK;
}
