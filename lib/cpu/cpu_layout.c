/*
 * cpu_layout.c - ops that only move data on the CPU: nearest-neighbour x2
 * upsampling (UNet up blocks, VAE decoder) and channel concatenation (UNet
 * skip connections).
 */
#include "cpu_internal.h"

#include <string.h>

/* (NC, H, W) -> (NC, 2H, 2W): out[p, y, x] = in[p, y/2, x/2]. */
diffuse_status cpu_upsample2x(bk_backend *bk, const float *in, float *out, int nc, int h, int w) {
    if (!in || !out || nc <= 0 || h <= 0 || w <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "upsample2x: %s (nc=%d h=%d w=%d)",
                       !in || !out ? "NULL buffer" : "dims must be positive", nc, h, w);
    const long rows = (long)nc * h; /* input rows, each written to two output rows */
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)rows * w * 4 > CPU_PAR_MIN)
    for (long r = 0; r < rows; r++) {
        const float *src = in + (size_t)r * w;
        float *dst = out + (size_t)r * 4 * w; /* output rows 2r and 2r+1 of the (NC*2H, 2W) view */
        for (int x = 0; x < w; x++) dst[2 * x] = dst[2 * x + 1] = src[x];
        memcpy(dst + 2 * w, dst, (size_t)2 * w * sizeof *dst);
    }
    return DIFFUSE_OK;
}

/* a (N, Ca, HW), b (N, Cb, HW) -> out (N, Ca+Cb, HW). */
diffuse_status cpu_concat(bk_backend *bk, const float *a, const float *b, float *out, int n, int ca, int cb,
                          int hw) {
    if (!a || !b || !out || n <= 0 || ca <= 0 || cb <= 0 || hw <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "concat: %s (n=%d ca=%d cb=%d hw=%d)",
                       !a || !b || !out ? "NULL buffer" : "dims must be positive", n, ca, cb, hw);
    const size_t sa = (size_t)ca * hw, sb = (size_t)cb * hw; /* floats per image of a, b */
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)n * (sa + sb) > CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        memcpy(out + (size_t)i * (sa + sb), a + (size_t)i * sa, sa * sizeof *out);
        memcpy(out + (size_t)i * (sa + sb) + sa, b + (size_t)i * sb, sb * sizeof *out);
    }
    return DIFFUSE_OK;
}
