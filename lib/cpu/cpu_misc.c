/*
 * cpu_misc.c - the small data-movement ops of the CPU backend: batched
 * transpose between NCHW maps and token sequences, per-sample channel bias,
 * affine scaling, and host copies (memcpy, since backend memory is host
 * memory here).
 */
#include "cpu_internal.h"

#include <string.h>

/* Tiles of 32 x 32 keep both the rows read and the rows written in cache. */
#define TRANSPOSE_TILE 32

diffuse_status cpu_transpose(bk_backend *bk, const float *in, float *out, int n, int r, int k) {
    if (!in || !out || in == out || n <= 0 || r <= 0 || k <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "transpose: NULL or aliased buffers, or non-positive dims (n=%d r=%d k=%d)", n, r, k);
    const int tr = (r + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE, tk = (k + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    const long long tiles = (long long)n * tr * tk;
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)n * r * k > CPU_PAR_MIN)
    for (long long t = 0; t < tiles; t++) {
        const int b = (int)(t / ((long long)tr * tk));
        const int r0 = (int)(t / tk % tr) * TRANSPOSE_TILE, k0 = (int)(t % tk) * TRANSPOSE_TILE;
        const int r1 = r0 + TRANSPOSE_TILE < r ? r0 + TRANSPOSE_TILE : r;
        const int k1 = k0 + TRANSPOSE_TILE < k ? k0 + TRANSPOSE_TILE : k;
        const float *src = in + (size_t)b * r * k;
        float *dst = out + (size_t)b * r * k;
        for (int i = r0; i < r1; i++)
            for (int j = k0; j < k1; j++) dst[(size_t)j * r + i] = src[(size_t)i * k + j];
    }
    return DIFFUSE_OK;
}

diffuse_status cpu_add_channel(bk_backend *bk, const float *in, const float *bias, float *out, int n, int c,
                               int hw) {
    if (!in || !bias || !out || n <= 0 || c <= 0 || hw <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "add_channel: NULL buffer or non-positive dims (n=%d c=%d hw=%d)", n, c, hw);
    const long long planes = (long long)n * c;
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)planes * hw > CPU_PAR_MIN)
    for (long long p = 0; p < planes; p++) {
        const float b = bias[p];
        const float *x = in + (size_t)p * hw;
        float *y = out + (size_t)p * hw;
        for (int i = 0; i < hw; i++) y[i] = x[i] + b;
    }
    return DIFFUSE_OK;
}

diffuse_status cpu_scale(bk_backend *bk, const float *in, float *out, size_t n, float s, float b) {
    if (!in || !out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "scale: NULL %s", in ? "output" : "input");
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if (n > CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = in[i] * s + b;
    return DIFFUSE_OK;
}

diffuse_status cpu_copy(bk_backend *bk, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src))
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "copy: NULL %s", dst ? "source" : "destination");
    if (bytes) memmove(dst, src, bytes);
    return DIFFUSE_OK;
}
