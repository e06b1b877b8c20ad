/*
 * cpu_linear.c - fully connected layer (PyTorch nn.Linear layout) on the
 * CPU: one sgemm against the transposed weight, bias broadcast first so the
 * GEMM accumulates onto it.
 */
#include "cpu_internal.h"

#include <cblas.h>

diffuse_status cpu_linear(bk_backend *bk, const bk_linear_args *a) {
    if (!a || !a->in || !a->weight || !a->out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "linear: NULL %s",
                       !a ? "args" : !a->in ? "input" : !a->weight ? "weight" : "output");
    if (a->m <= 0 || a->k <= 0 || a->n <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "linear: dims must be positive (m=%d k=%d n=%d)",
                       a->m, a->k, a->n);

    if (a->bias) { /* out (M, N) = bias[None, :] */
        const float *bias = a->bias;
        float *out = a->out;
        const int m = a->m, n = a->n;
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)m * n > CPU_PAR_MIN)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) out[(size_t)i * n + j] = bias[j];
    }
    /* out (M, N) += in (M, K) x weight (N, K)^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->m, a->n, a->k, 1.0f, a->in, a->k, a->weight, a->k,
                a->bias ? 1.0f : 0.0f, a->out, a->n);
    return DIFFUSE_OK;
}
