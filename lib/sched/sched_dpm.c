/*
 * sched_dpm.c - DPM-Solver++ multistep (diffusers' DPMSolverMultistepScheduler
 * with algorithm_type "dpmsolver++" or "sde-dpmsolver++"): first, second
 * (midpoint or heun) and third order updates on the data prediction, with
 * lower_order_final / euler_at_final and the SDE variant's fresh noise at
 * every step. "DPM++ 2M", "DPM++ 2M Karras" and "DPM++ 2M SDE" are this
 * file with different configs.
 */
#include "sched/sched_internal.h"

#include <math.h>

/* alpha, sigma and lambda = log(alpha) - log(sigma) at one sigma. */
typedef struct dpm_point {
    float alpha, sigma, lambda;
} dpm_point;

static dpm_point dpm_at(float sigma) {
    dpm_point p;
    sched_sigma_to_alpha_sigma(sigma, &p.alpha, &p.sigma);
    p.lambda = logf(p.alpha) - logf(p.sigma);
    return p;
}

/* convert_model_output: the x0 prediction, stored as the newest history entry. */
static void dpm_convert(sched *s, size_t i, const float *m, const float *x, float *x0) {
    dpm_point p = dpm_at(s->sigmas[i]);
    for (size_t j = 0; j < s->numel; j++) {
        switch (s->cfg.pred) {
        case PRED_EPSILON: x0[j] = (x[j] - p.sigma * m[j]) / p.alpha; break;
        case PRED_V: x0[j] = p.alpha * x[j] - p.sigma * m[j]; break;
        case PRED_SAMPLE: x0[j] = m[j]; break;
        }
    }
}

/* Coefficients of one update, in the form x_t = cx * x + c0 * D0 + c1 * D1
 * + c2 * D2 + cn * noise (the terms are summed left to right). */
typedef struct dpm_coef {
    float cx, c0, c1, c2, cn;
    int sign0, sign1, sign2; /* +1: add the term, -1: subtract it, as written in diffusers */
} dpm_coef;

static dpm_coef dpm_first_order(const sched *s, dpm_point t, dpm_point s0) {
    float h = t.lambda - s0.lambda;
    dpm_coef c = {0};
    if (!s->cfg.sde) {
        c.cx = t.sigma / s0.sigma;
        c.c0 = t.alpha * (expf(-h) - 1.0f);
        c.sign0 = -1;
    } else {
        c.cx = t.sigma / s0.sigma * expf(-h);
        c.c0 = t.alpha * (1.0f - expf(-2.0f * h));
        c.sign0 = 1;
        c.cn = t.sigma * sqrtf(1.0f - expf(-2.0f * h));
    }
    return c;
}

static dpm_coef dpm_second_order(const sched *s, dpm_point t, dpm_point s0, float h) {
    dpm_coef c = dpm_first_order(s, t, s0);
    float e = expf(-h), e2 = expf(-2.0f * h);
    if (!s->cfg.sde) {
        c.c1 = s->cfg.solver_heun ? t.alpha * ((e - 1.0f) / h + 1.0f) : 0.5f * (t.alpha * (e - 1.0f));
        c.sign1 = s->cfg.solver_heun ? 1 : -1;
    } else {
        c.c1 = s->cfg.solver_heun ? t.alpha * ((1.0f - e2) / (-2.0f * h) + 1.0f) : 0.5f * (t.alpha * (1.0f - e2));
        c.sign1 = 1;
    }
    return c;
}

static dpm_coef dpm_third_order(const sched *s, dpm_point t, dpm_point s0, float h) {
    dpm_coef c = dpm_first_order(s, t, s0);
    float e = expf(-h), e2 = expf(-2.0f * h);
    if (!s->cfg.sde) {
        c.c1 = t.alpha * ((e - 1.0f) / h + 1.0f);
        c.c2 = t.alpha * ((e - 1.0f + h) / (h * h) - 0.5f);
        c.sign1 = 1;
        c.sign2 = -1;
    } else {
        c.c1 = t.alpha * ((1.0f - e2) / (-2.0f * h) + 1.0f);
        c.c2 = t.alpha * ((1.0f - e2 - 2.0f * h) / ((2.0f * h) * (2.0f * h)) - 0.5f);
        c.sign1 = 1;
        c.sign2 = 1;
    }
    return c;
}

static float dpm_term(float acc, int sign, float c, float d) {
    return sign > 0 ? acc + c * d : acc - c * d;
}

/* The update of @order (1-3) from sample @x to @y with the x0 history. */
static void dpm_update(sched *s, size_t i, int order, const float *x, float *y) {
    dpm_point t = dpm_at(s->sigmas[i + 1]), s0 = dpm_at(s->sigmas[i]);
    const float *m0 = sched_hist_back(s, 0), *m1 = order > 1 ? sched_hist_back(s, 1) : m0;
    const float *m2 = order > 2 ? sched_hist_back(s, 2) : m0;
    float h = t.lambda - s0.lambda, inv_r0 = 0.0f, inv_r1 = 0.0f, k1 = 0.0f, k2 = 0.0f;
    dpm_coef c;
    if (order == 1) {
        c = dpm_first_order(s, t, s0);
    } else {
        dpm_point s1 = dpm_at(s->sigmas[i - 1]);
        float r0 = (s0.lambda - s1.lambda) / h;
        inv_r0 = 1.0f / r0;
        if (order == 2) {
            c = dpm_second_order(s, t, s0, h);
        } else {
            dpm_point s2 = dpm_at(s->sigmas[i - 2]);
            float r1 = (s1.lambda - s2.lambda) / h;
            inv_r1 = 1.0f / r1;
            k1 = r0 / (r0 + r1); /* D1 = D1_0 + k1 (D1_0 - D1_1), D2 = k2 (D1_0 - D1_1) */
            k2 = 1.0f / (r0 + r1);
            c = dpm_third_order(s, t, s0, h);
        }
    }
    for (size_t j = 0; j < s->numel; j++) {
        float acc = dpm_term(c.cx * x[j], c.sign0, c.c0, m0[j]);
        if (order == 2) {
            acc = dpm_term(acc, c.sign1, c.c1, inv_r0 * (m0[j] - m1[j]));
        } else if (order == 3) {
            float d10 = inv_r0 * (m0[j] - m1[j]), d11 = inv_r1 * (m1[j] - m2[j]);
            acc = dpm_term(acc, c.sign1, c.c1, d10 + k1 * (d10 - d11));
            acc = dpm_term(acc, c.sign2, c.c2, k2 * (d10 - d11));
        }
        y[j] = s->cfg.sde ? acc + c.cn * s->noise[j] : acc;
    }
}

void sched_dpm_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    const sched_config *c = &s->cfg;
    size_t n = s->n_evals;
    int lower_final = i == n - 1 && (c->euler_at_final || (c->lower_order_final && n < 15) || !c->final_sigma_min);
    int lower_second = i == n - 2 && c->lower_order_final && n < 15;
    float *x0 = sched_hist_push(s, c->solver_order);
    dpm_convert(s, i, m, x, x0);
    int order;
    if (c->solver_order == 1 || s->lower_order_nums < 1 || lower_final) order = 1;
    else if (c->solver_order == 2 || s->lower_order_nums < 2 || lower_second) order = 2;
    else order = 3;
    dpm_update(s, i, order, x, y);
    if (s->lower_order_nums < c->solver_order) s->lower_order_nums++;
}
