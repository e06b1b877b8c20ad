/*
 * cpu_norm.c - group norm (with optional fused SiLU) and layer norm on the
 * CPU. Statistics are two-pass sums in float64 and the affine is applied in
 * float64, so the result does not lose digits when |mean| >> std.
 */
#include "cpu_internal.h"

#include <math.h>

/* mean and 1/sqrt(var + eps) of x[0..count), float64, two passes. */
static void stats_f64(const float *x, size_t count, double eps, double *mean, double *rstd) {
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += x[i];
    const double mu = sum / (double)count;
    double ss = 0.0;
    for (size_t i = 0; i < count; i++) {
        const double d = (double)x[i] - mu;
        ss += d * d;
    }
    *mean = mu;
    *rstd = 1.0 / sqrt(ss / (double)count + eps);
}

/* y[i] = (x[i] - mean) * scale + shift, then SiLU if @silu; y may equal x. */
static void affine_row(const float *x, float *y, int len, double mean, double scale, double shift, int silu) {
    for (int i = 0; i < len; i++) {
        const float v = (float)(((double)x[i] - mean) * scale + shift);
        y[i] = silu ? v / (1.0f + expf(-v)) : v;
    }
}

diffuse_status cpu_group_norm(bk_backend *bk, const bk_group_norm_args *a) {
    if (!a || !a->in || !a->gamma || !a->beta || !a->out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "group_norm: NULL %s",
                       !a ? "args" : !a->in ? "input" : !a->gamma ? "gamma" : !a->beta ? "beta" : "output");
    if (a->n <= 0 || a->c <= 0 || a->hw <= 0 || a->groups <= 0 || a->c % a->groups != 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "group_norm: need positive dims and groups dividing channels (n=%d c=%d hw=%d groups=%d)",
                       a->n, a->c, a->hw, a->groups);
    if (!(a->eps >= 0.0f))
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "group_norm: eps %g is negative or NaN",
                       (double)a->eps);

    const int cpg = a->c / a->groups;                /* channels per group */
    const size_t gsize = (size_t)cpg * a->hw;        /* values per (n, group) */
    const long ng = (long)a->n * a->groups;
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)ng * gsize > CPU_PAR_MIN)
    for (long i = 0; i < ng; i++) {
        const int g = (int)(i % a->groups);
        const float *x = a->in + (size_t)i * gsize; /* (cpg, HW) */
        float *y = a->out + (size_t)i * gsize;
        double mean, rstd;
        stats_f64(x, gsize, (double)a->eps, &mean, &rstd);
        for (int cc = 0; cc < cpg; cc++) {
            const int ch = g * cpg + cc;
            affine_row(x + (size_t)cc * a->hw, y + (size_t)cc * a->hw, a->hw, mean, rstd * a->gamma[ch],
                       a->beta[ch], a->fuse_silu);
        }
    }
    return DIFFUSE_OK;
}

diffuse_status cpu_layer_norm(bk_backend *bk, const bk_layer_norm_args *a) {
    if (!a || !a->in || !a->gamma || !a->beta || !a->out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "layer_norm: NULL %s",
                       !a ? "args" : !a->in ? "input" : !a->gamma ? "gamma" : !a->beta ? "beta" : "output");
    if (a->m <= 0 || a->c <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "layer_norm: dims must be positive (m=%d c=%d)",
                       a->m, a->c);
    if (!(a->eps >= 0.0f))
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "layer_norm: eps %g is negative or NaN",
                       (double)a->eps);

    const int m = a->m, c = a->c;
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)m * c > CPU_PAR_MIN)
    for (int i = 0; i < m; i++) {
        const float *x = a->in + (size_t)i * c; /* (C) */
        float *y = a->out + (size_t)i * c;
        double mean, rstd;
        stats_f64(x, (size_t)c, (double)a->eps, &mean, &rstd);
        for (int j = 0; j < c; j++)
            y[j] = (float)(((double)x[j] - mean) * rstd * a->gamma[j] + a->beta[j]);
    }
    return DIFFUSE_OK;
}
