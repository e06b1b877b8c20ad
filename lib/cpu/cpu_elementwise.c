/*
 * cpu_elementwise.c - pointwise ops on the CPU: GELU (exact, erf form),
 * quick GELU, SiLU, GEGLU and add. Loops are OpenMP-parallel over elements;
 * in-place use (out == in) is allowed everywhere.
 */
#include "cpu_internal.h"

#include <math.h>

/* x * Phi(x) written as 0.5 x erfc(-x / sqrt 2): unlike 0.5 x (1 + erf(..))
 * it keeps full relative accuracy in the negative tail. */
static inline float gelu_erf(float x) { return 0.5f * x * erfcf(-x * (float)M_SQRT1_2); }
static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float quick_gelu(float x) { return x / (1.0f + expf(-1.702f * x)); }

diffuse_status cpu_unary(bk_backend *bk, bk_unary f, const float *in, float *out, size_t n) {
    if (!in || !out || n == 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "unary: %s", n == 0 ? "zero elements" : "NULL buffer");
    switch (f) {
    case BK_UNARY_GELU:
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if (n > CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) out[i] = gelu_erf(in[i]);
        break;
    case BK_UNARY_QUICK_GELU:
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if (n > CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) out[i] = quick_gelu(in[i]);
        break;
    case BK_UNARY_SILU:
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if (n > CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) out[i] = silu(in[i]);
        break;
    default:
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "unary: unknown function %d", (int)f);
    }
    return DIFFUSE_OK;
}

/* in (M, 2D) = [h | gate] -> out (M, D) = h * gelu(gate) (diffusers GEGLU). */
diffuse_status cpu_geglu(bk_backend *bk, const float *in, float *out, int m, int d) {
    if (!in || !out || m <= 0 || d <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "geglu: %s (m=%d d=%d)",
                       !in || !out ? "NULL buffer" : "dims must be positive", m, d);
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)m * d > CPU_PAR_MIN)
    for (int i = 0; i < m; i++) {
        const float *h = in + (size_t)i * 2 * d, *gate = h + d;
        float *o = out + (size_t)i * d;
        for (int j = 0; j < d; j++) o[j] = h[j] * gelu_erf(gate[j]);
    }
    return DIFFUSE_OK;
}

diffuse_status cpu_add(bk_backend *bk, const float *a, const float *b, float *out, size_t n) {
    if (!a || !b || !out || n == 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "add: %s", n == 0 ? "zero elements" : "NULL buffer");
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if (n > CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
    return DIFFUSE_OK;
}
