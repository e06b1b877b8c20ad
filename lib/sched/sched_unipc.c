/*
 * sched_unipc.c - UniPC (diffusers' UniPCMultistepScheduler): at every
 * step a corrector (UniC) refines the sample the previous predictor made,
 * using the new model output, then a predictor (UniP) of order 1-3 moves to
 * the next sigma. B(h) variants bh1 and bh2; data (x0) or noise prediction.
 */
#include "sched/sched_internal.h"

#include <math.h>

#define UNIPC_MAX_ORDER 3

typedef struct unipc_point {
    float alpha, sigma, lambda;
} unipc_point;

static unipc_point unipc_at(float sigma) {
    unipc_point p;
    sched_sigma_to_alpha_sigma(sigma, &p.alpha, &p.sigma);
    p.lambda = logf(p.alpha) - logf(p.sigma);
    return p;
}

/* The rho coefficients: solve R rho = b in double (torch.linalg.solve in
 * float32 differs by an ulp or so), R = rows rks^k, n <= 3. */
static void unipc_solve(float R[UNIPC_MAX_ORDER][UNIPC_MAX_ORDER], const float *b, int n, float *rho) {
    double a[UNIPC_MAX_ORDER][UNIPC_MAX_ORDER + 1];
    for (int r = 0; r < n; r++) {
        for (int c = 0; c < n; c++) a[r][c] = R[r][c];
        a[r][n] = b[r];
    }
    for (int c = 0; c < n; c++) { /* Gaussian elimination, partial pivoting */
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r][c]) > fabs(a[p][c])) p = r;
        for (int k = 0; k <= n; k++) {
            double tmp = a[c][k];
            a[c][k] = a[p][k];
            a[p][k] = tmp;
        }
        for (int r = c + 1; r < n; r++) {
            double f = a[r][c] / a[c][c];
            for (int k = c; k <= n; k++) a[r][k] -= f * a[c][k];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        double v = a[r][n];
        for (int k = r + 1; k < n; k++) v -= a[r][k] * (double)rho[k];
        rho[r] = (float)(v / a[r][r]);
    }
}

/* What predictor and corrector share: h, the phi terms and B(h), the
 * ratios r_k of the older points and their rho coefficients. */
typedef struct unipc_terms {
    float h_phi_1, B_h, rk[UNIPC_MAX_ORDER];
    float rho[UNIPC_MAX_ORDER];
    float cx, c0, cres; /* x_t = cx * x - c0 * m0 - cres * (res) */
} unipc_terms;

/* @t: target point, @s0: current point, @older[k]: the points of the
 * (k+1)-th previous model outputs; @n_rho unknowns of R rho = b (corrector:
 * order; predictor: order - 1, or the fixed 0.5 for order 2). */
static unipc_terms unipc_setup(const sched *s, unipc_point t, unipc_point s0, const unipc_point *older, int order,
                               int corrector) {
    unipc_terms u = {0};
    float h = t.lambda - s0.lambda;
    float rks[UNIPC_MAX_ORDER];
    for (int k = 0; k + 1 < order; k++) u.rk[k] = rks[k] = (older[k].lambda - s0.lambda) / h;
    rks[order - 1] = 1.0f;
    float hh = s->cfg.predict_x0 ? -h : h;
    u.h_phi_1 = expm1f(hh);
    float h_phi_k = u.h_phi_1 / hh - 1.0f;
    u.B_h = s->cfg.bh1 ? hh : expm1f(hh);
    float R[UNIPC_MAX_ORDER][UNIPC_MAX_ORDER], b[UNIPC_MAX_ORDER];
    int factorial = 1;
    for (int k = 1; k <= order; k++) {
        for (int c = 0; c < order; c++) R[k - 1][c] = k == 1 ? 1.0f : k == 2 ? rks[c] : rks[c] * rks[c];
        b[k - 1] = h_phi_k * (float)factorial / u.B_h;
        factorial *= k + 1;
        h_phi_k = h_phi_k / hh - (float)(1.0 / factorial);
    }
    if (corrector) {
        if (order == 1) u.rho[0] = 0.5f;
        else unipc_solve(R, b, order, u.rho);
    } else if (order == 2) {
        u.rho[0] = 0.5f;
    } else if (order == 3) {
        unipc_solve(R, b, order - 1, u.rho);
    }
    if (s->cfg.predict_x0) {
        u.cx = t.sigma / s0.sigma;
        u.c0 = t.alpha * u.h_phi_1;
        u.cres = t.alpha * u.B_h;
    } else {
        u.cx = t.alpha / s0.alpha;
        u.c0 = t.sigma * u.h_phi_1;
        u.cres = t.sigma * u.B_h;
    }
    return u;
}

/* UniC: corrects the last predictor's sample s->saved in place with the new
 * converted model output @mt; the history still ends at the previous one. */
static void unipc_correct(sched *s, size_t i, const float *mt) {
    int order = s->this_order;
    unipc_point t = unipc_at(s->sigmas[i]), s0 = unipc_at(s->sigmas[i - 1]), older[UNIPC_MAX_ORDER] = {{0}};
    for (int k = 1; k < order; k++) older[k - 1] = unipc_at(s->sigmas[i - 1 - k]);
    unipc_terms u = unipc_setup(s, t, s0, older, order, 1);
    const float *m0 = sched_hist_back(s, 0);
    const float *m1 = order > 1 ? sched_hist_back(s, 1) : m0, *m2 = order > 2 ? sched_hist_back(s, 2) : m0;
    for (size_t j = 0; j < s->numel; j++) {
        float base = u.cx * s->saved[j] - u.c0 * m0[j];
        float res = u.rho[order - 1] * (mt[j] - m0[j]);
        if (order > 1) {
            float corr = u.rho[0] * ((m1[j] - m0[j]) / u.rk[0]);
            if (order > 2) corr = corr + u.rho[1] * ((m2[j] - m0[j]) / u.rk[1]);
            res = corr + res;
        }
        s->saved[j] = base - u.cres * res;
    }
}

/* UniP: from s->saved (the corrected sample) to @y with the history. */
static void unipc_predict(sched *s, size_t i, int order, float *y) {
    unipc_point t = unipc_at(s->sigmas[i + 1]), s0 = unipc_at(s->sigmas[i]), older[UNIPC_MAX_ORDER] = {{0}};
    for (int k = 1; k < order; k++) older[k - 1] = unipc_at(s->sigmas[i - k]);
    unipc_terms u = unipc_setup(s, t, s0, older, order, 0);
    const float *m0 = sched_hist_back(s, 0);
    const float *m1 = order > 1 ? sched_hist_back(s, 1) : m0, *m2 = order > 2 ? sched_hist_back(s, 2) : m0;
    for (size_t j = 0; j < s->numel; j++) {
        float base = u.cx * s->saved[j] - u.c0 * m0[j];
        float res = 0.0f;
        if (order > 1) {
            res = u.rho[0] * ((m1[j] - m0[j]) / u.rk[0]);
            if (order > 2) res = res + u.rho[1] * ((m2[j] - m0[j]) / u.rk[1]);
        }
        y[j] = base - u.cres * res;
    }
}

static int corrector_disabled(const sched *s, int k) {
    for (int d = 0; d < s->cfg.n_disable_corrector; d++)
        if (s->cfg.disable_corrector[d] == k) return 1;
    return 0;
}

void sched_unipc_step(sched *s, size_t i, const float *m, const float *x, float *y) {
    const sched_config *c = &s->cfg;
    unipc_point p = unipc_at(s->sigmas[i]);
    float *mt = s->tmp; /* convert_model_output */
    for (size_t j = 0; j < s->numel; j++) {
        float mj = m[j], xj = x[j];
        if (c->predict_x0)
            mt[j] = c->pred == PRED_EPSILON ? (xj - p.sigma * mj) / p.alpha
                  : c->pred == PRED_V ? p.alpha * xj - p.sigma * mj : mj;
        else
            mt[j] = c->pred == PRED_EPSILON ? mj
                  : c->pred == PRED_V ? p.alpha * mj + p.sigma * xj : (xj - p.alpha * mj) / p.sigma;
    }
    int use_corrector = i > 0 && !corrector_disabled(s, (int)i - 1) && s->has_saved;
    if (use_corrector) {
        unipc_correct(s, i, mt);
    } else {
        for (size_t j = 0; j < s->numel; j++) s->saved[j] = x[j];
    }
    float *slot = sched_hist_push(s, c->solver_order);
    for (size_t j = 0; j < s->numel; j++) slot[j] = mt[j];
    int order = c->solver_order;
    if (c->lower_order_final && (size_t)order > s->n_evals - i) order = (int)(s->n_evals - i);
    if (order > s->lower_order_nums + 1) order = s->lower_order_nums + 1;
    s->this_order = order;
    s->has_saved = 1; /* last_sample */
    unipc_predict(s, i, order, y);
    if (s->lower_order_nums < c->solver_order) s->lower_order_nums++;
}
