/*
 * sched_kdiff.c - the k-diffusion samplers, which move the sample along a
 * sigma schedule: LMS (linear multistep, coefficients integrated the way
 * scipy.integrate.quad does it), Euler, Euler ancestral and Heun (two model
 * evaluations per step). Float32 in diffusers' operation order.
 */
#include "sched/sched_internal.h"

#include <math.h>

/* x0 estimate at @sigma: epsilon, v (k-diffusion scaling) or sample. */
static float k_pred_x0(sched_pred pred, float m, float x, float sigma) {
    switch (pred) {
    case PRED_EPSILON: return x - sigma * m;
    case PRED_V: {
        float den = sigma * sigma + 1.0f;
        return m * (-sigma / sqrtf(den)) + x / den;
    }
    case PRED_SAMPLE: return m;
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* LMS                                                                        */
/* ------------------------------------------------------------------------ */

/* The Lagrange basis polynomial diffusers integrates, evaluated as torch
 * does: tau rounded to float32, every factor a float32 tensor operation. */
typedef struct lms_basis {
    const float *sigmas;
    int order, t, current;
} lms_basis;

static double lms_basis_eval(const lms_basis *b, double tau) {
    if (b->order == 1) return 1.0; /* the product stays the Python float 1.0 */
    float prod = 1.0f, ft = (float)tau;
    for (int k = 0; k < b->order; k++) {
        if (k == b->current) continue;
        float sk = b->sigmas[b->t - k];
        prod *= (ft - sk) / (b->sigmas[b->t - b->current] - sk);
    }
    return (double)prod;
}

/* QUADPACK's 21-point Gauss-Kronrod rule (dqk21), the first and, for these
 * polynomials, only pass of scipy.integrate.quad. */
static double lms_qk21(const lms_basis *b, double a, double c) {
    static const double xgk[11] = {
        0.995657163025808080735527280689003, 0.973906528517171720077964012084452,
        0.930157491355708226001207180059508, 0.865063366688984510732096688423493,
        0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
        0.562757134668604683339000099272694, 0.433395394129247190799265943165784,
        0.294392862701460198131126603103866, 0.148874338981631210884826001129720, 0.0};
    static const double wgk[11] = {
        0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
        0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
        0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
        0.123491976262065851077600525030780, 0.134709217311473325928054001771707,
        0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
        0.149445554002916905664936468389821};
    double centr = 0.5 * (a + c), hlgth = 0.5 * (c - a);
    double resk = wgk[10] * lms_basis_eval(b, centr);
    for (int j = 1; j <= 5; j++) { /* Gauss points (Fortran jtw = 2j) */
        double absc = hlgth * xgk[2 * j - 1];
        resk += wgk[2 * j - 1] * (lms_basis_eval(b, centr - absc) + lms_basis_eval(b, centr + absc));
    }
    for (int j = 1; j <= 5; j++) { /* Kronrod points (Fortran jtwm1 = 2j - 1) */
        double absc = hlgth * xgk[2 * j - 2];
        resk += wgk[2 * j - 2] * (lms_basis_eval(b, centr - absc) + lms_basis_eval(b, centr + absc));
    }
    return resk * hlgth;
}

void sched_lms_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    float sigma = s->sigmas[i];
    float *d = sched_hist_push(s, 4); /* derivatives, newest last */
    for (size_t j = 0; j < s->numel; j++) d[j] = (x[j] - k_pred_x0(s->cfg.pred, m[j], x[j], sigma)) / sigma;
    int order = (int)i + 1 < 4 ? (int)i + 1 : 4;
    float coeff[4];
    for (int k = 0; k < order; k++) {
        lms_basis b = {s->sigmas, order, (int)i, k};
        coeff[k] = (float)lms_qk21(&b, s->sigmas[i], s->sigmas[i + 1]);
    }
    int used = order < s->n_hist ? order : s->n_hist; /* zip() stops at the shorter list */
    for (size_t j = 0; j < s->numel; j++) {
        float acc = coeff[0] * sched_hist_back(s, 0)[j];
        for (int k = 1; k < used; k++) acc = acc + coeff[k] * sched_hist_back(s, k)[j];
        y[j] = x[j] + acc;
    }
}

/* ------------------------------------------------------------------------ */
/* Euler and Euler ancestral                                                  */
/* ------------------------------------------------------------------------ */

void sched_euler_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    float sigma = s->sigmas[i];
    float dt = s->sigmas[i + 1] - sigma; /* s_churn = 0: sigma_hat = sigma */
    for (size_t j = 0; j < s->numel; j++) {
        float xj = x[j];
        float derivative = (xj - k_pred_x0(s->cfg.pred, m[j], xj, sigma)) / sigma;
        y[j] = xj + derivative * dt;
    }
}

void sched_euler_a_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    float from = s->sigmas[i], to = s->sigmas[i + 1];
    float up = sqrtf(to * to * (from * from - to * to) / (from * from));
    float down = sqrtf(to * to - up * up);
    float dt = down - from;
    for (size_t j = 0; j < s->numel; j++) {
        float xj = x[j];
        float derivative = (xj - k_pred_x0(s->cfg.pred, m[j], xj, from)) / from;
        float v = xj + derivative * dt;
        y[j] = v + s->noise[j] * up;
    }
}

/* ------------------------------------------------------------------------ */
/* Heun                                                                       */
/* ------------------------------------------------------------------------ */

/* First call of a step: an Euler step to sigma_next, remembered; second
 * call: the average of both slopes from the remembered sample. */
void sched_heun_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    int second = s->heun_second;
    float sigma = second ? s->sigmas[i - 1] : s->sigmas[i];
    float sigma_next = second ? s->sigmas[i] : s->sigmas[i + 1];
    float sigma_in = second ? sigma_next : sigma;
    float *prev_derivative = s->tmp;
    if (!second) s->heun_dt = sigma_next - sigma;
    for (size_t j = 0; j < s->numel; j++) {
        float xj = x[j];
        float x0 = sched_clip(s, k_pred_x0(s->cfg.pred, m[j], xj, sigma_in));
        if (!second) {
            float derivative = (xj - x0) / sigma;
            prev_derivative[j] = derivative;
            s->saved[j] = xj;
            y[j] = xj + derivative * s->heun_dt;
        } else {
            float derivative = (xj - x0) / sigma_next;
            derivative = (prev_derivative[j] + derivative) / 2.0f;
            y[j] = s->saved[j] + derivative * s->heun_dt;
        }
    }
    s->heun_second = !second;
}
