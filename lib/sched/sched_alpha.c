/*
 * sched_alpha.c - the samplers that work on alphas_cumprod at integer
 * timesteps: DDIM (eta = 0 deterministic, eta > 0 with noise), DDPM, and
 * PNDM's pseudo linear multistep (PLMS, skip_prk_steps). Each loop is the
 * float32 expression of diffusers' step, operation for operation.
 */
#include "sched/sched_internal.h"

#include <math.h>

/* The x0 estimate of the model output @m at sample @x (epsilon, v or sample
 * prediction), with sqrt(alpha_prod) @sa and sqrt(1 - alpha_prod) @sb. */
static float pred_x0(sched_pred pred, float m, float x, float sa, float sb) {
    switch (pred) {
    case PRED_EPSILON: return (x - sb * m) / sa;
    case PRED_V: return sa * x - sb * m;
    case PRED_SAMPLE: return m;
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* DDIM                                                                       */
/* ------------------------------------------------------------------------ */

void sched_ddim_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    const float *ac = s->alphas_cumprod;
    int t = (int)s->timesteps[i];
    int prev_t = t - s->cfg.num_train_timesteps / s->steps;
    float a_t = ac[t], a_prev = prev_t >= 0 ? ac[prev_t] : s->final_alpha_cumprod;
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    float sa = sqrtf(a_t), sb = sqrtf(b_t);
    float variance = (b_prev / b_t) * (1.0f - a_t / a_prev);
    float std_dev = (float)s->eta * sqrtf(variance);
    float dir_c = sqrtf(1.0f - a_prev - std_dev * std_dev);
    float x0_c = sqrtf(a_prev);
    int noisy = s->eta > 0.0;
    for (size_t j = 0; j < s->numel; j++) {
        float mj = m[j], xj = x[j];
        float x0 = pred_x0(s->cfg.pred, mj, xj, sa, sb);
        float eps = s->cfg.pred == PRED_EPSILON ? mj
                  : s->cfg.pred == PRED_V ? sa * mj + sb * xj
                  : (xj - sa * x0) / sb;
        x0 = sched_clip(s, x0);
        float v = x0_c * x0 + dir_c * eps;
        y[j] = noisy ? v + std_dev * s->noise[j] : v;
    }
}

/* ------------------------------------------------------------------------ */
/* DDPM                                                                       */
/* ------------------------------------------------------------------------ */

/* previous_timestep: the entry after the first occurrence of @t, or -1. */
static int ddpm_prev_timestep(const sched *s, double t) {
    for (size_t k = 0; k < s->n_evals; k++)
        if (s->timesteps[k] == t) return k + 1 < s->n_evals ? (int)s->timesteps[k + 1] : -1;
    return -1;
}

void sched_ddpm_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    const float *ac = s->alphas_cumprod;
    int t = (int)s->timesteps[i];
    int prev_t = ddpm_prev_timestep(s, s->timesteps[i]);
    float a_t = ac[t], a_prev = prev_t >= 0 ? ac[prev_t] : 1.0f;
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    float cur_a = a_t / a_prev, cur_b = 1.0f - cur_a;
    float sa = sqrtf(a_t), sb = sqrtf(b_t);
    float c_x0 = sqrtf(a_prev) * cur_b / b_t;
    float c_x = sqrtf(cur_a) * b_prev / b_t;
    float sd = 0.0f; /* multiplies the noise */
    if (t > 0) {
        float var = (b_prev / b_t) * cur_b;
        var = var < 1e-20f ? 1e-20f : var;
        switch (s->cfg.variance) {
        case VAR_FIXED_SMALL: sd = sqrtf(var); break;
        case VAR_FIXED_SMALL_LOG: sd = expf(0.5f * logf(var)); break;
        case VAR_FIXED_LARGE: sd = sqrtf(cur_b); break;
        }
    }
    for (size_t j = 0; j < s->numel; j++) {
        float x0 = sched_clip(s, pred_x0(s->cfg.pred, m[j], x[j], sa, sb));
        float v = c_x0 * x0 + c_x * x[j];
        y[j] = t > 0 ? v + sd * s->noise[j] : v;
    }
}

/* ------------------------------------------------------------------------ */
/* PNDM (PLMS)                                                                */
/* ------------------------------------------------------------------------ */

/* PNDM's _get_prev_sample for one element: from @x at @t to @prev_t with
 * the combined model output @mo; coefficients precomputed in @c. */
typedef struct pndm_coef {
    float sa, sb, sample_c, diff, denom;
    int v_pred;
} pndm_coef;

static pndm_coef pndm_coefficients(const sched *s, int t, int prev_t) {
    float a_t = s->alphas_cumprod[t];
    float a_prev = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    pndm_coef c = {sqrtf(a_t), sqrtf(b_t), sqrtf(a_prev / a_t), a_prev - a_t,
                   a_t * sqrtf(b_prev) + sqrtf(a_t * b_t * a_prev), s->cfg.pred == PRED_V};
    return c;
}

static float pndm_prev_sample(const pndm_coef *c, float x, float mo) {
    if (c->v_pred) mo = c->sa * mo + c->sb * x;
    return c->sample_c * x - c->diff * mo / c->denom;
}

void sched_pndm_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    int ratio = s->cfg.num_train_timesteps / s->steps;
    int t = (int)s->timesteps[i], prev_t = t - ratio;
    if (s->counter != 1) {
        float *e = sched_hist_push(s, 4); /* ets[-3:] + [model_output] */
        for (size_t j = 0; j < s->numel; j++) e[j] = m[j];
    } else {
        prev_t = t;
        t = t + ratio;
    }
    pndm_coef c = pndm_coefficients(s, t, prev_t);
    int n = s->n_hist, first = n == 1 && s->counter == 0, second = n == 1 && s->counter == 1;
    const float *e1 = sched_hist_back(s, 0);
    const float *e2 = n > 1 ? sched_hist_back(s, 1) : e1;
    const float *e3 = n > 2 ? sched_hist_back(s, 2) : e1;
    const float *e4 = n > 3 ? sched_hist_back(s, 3) : e1;
    const float k24 = (float)(1.0 / 24.0);
    for (size_t j = 0; j < s->numel; j++) {
        float xj = x[j], mo;
        if (first) {
            mo = m[j];
            s->saved[j] = xj; /* cur_sample */
        } else if (second) {
            mo = (m[j] + e1[j]) / 2.0f;
            xj = s->saved[j];
        } else if (n == 2) {
            mo = (3.0f * e1[j] - e2[j]) / 2.0f;
        } else if (n == 3) {
            mo = (23.0f * e1[j] - 16.0f * e2[j] + 5.0f * e3[j]) / 12.0f;
        } else {
            mo = k24 * (55.0f * e1[j] - 59.0f * e2[j] + 37.0f * e3[j] - 9.0f * e4[j]);
        }
        y[j] = pndm_prev_sample(&c, xj, mo);
    }
    s->counter++;
}
