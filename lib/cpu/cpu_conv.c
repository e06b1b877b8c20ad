/*
 * cpu_conv.c - 2-D convolution on the CPU as im2col + sgemm. The column
 * buffer is built for a band of output rows at a time, so its size stays
 * bounded (CONV_SCRATCH_MAX, or what the arena has left) whatever the image;
 * 1x1 stride-1 unpadded convolutions skip im2col and are one GEMM.
 */
#include "cpu_internal.h"

#include <cblas.h>
#include <limits.h>
#include <string.h>

/* Upper bound on the im2col band. At 64x64 latents a 3x3 conv with
 * Cin = 1280 needs 11520 * 64 * 4 = 2.9 MB per output row, so 16 MiB holds
 * several rows: GEMMs stay large enough to run at full speed. */
#define CONV_SCRATCH_MAX ((size_t)16 << 20)

/* Checks @a and computes the output size. */
static diffuse_status conv_check(bk_backend *bk, const bk_conv2d_args *a, int *h_out, int *w_out) {
    if (!a || !a->in || !a->weight || !a->out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "conv2d: NULL %s",
                       !a ? "args" : !a->in ? "input" : !a->weight ? "weight" : "output");
    if (a->n <= 0 || a->c_in <= 0 || a->h <= 0 || a->w <= 0 || a->c_out <= 0 || a->kh <= 0 || a->kw <= 0 ||
        a->stride <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "conv2d: dims must be positive (n=%d c_in=%d h=%d w=%d c_out=%d kernel=%dx%d stride=%d)",
                       a->n, a->c_in, a->h, a->w, a->c_out, a->kh, a->kw, a->stride);
    if (a->pad_top < 0 || a->pad_bottom < 0 || a->pad_left < 0 || a->pad_right < 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "conv2d: negative padding (%d,%d,%d,%d)",
                       a->pad_top, a->pad_bottom, a->pad_left, a->pad_right);
    long long hp = (long long)a->h + a->pad_top + a->pad_bottom;
    long long wp = (long long)a->w + a->pad_left + a->pad_right;
    if ((a->circular_y && (a->pad_top > a->h || a->pad_bottom > a->h)) ||
        (a->circular_x && (a->pad_left > a->w || a->pad_right > a->w)))
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "conv2d: circular padding larger than the %dx%d input",
                       a->h, a->w);
    if (hp < a->kh || wp < a->kw)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "conv2d: %dx%d kernel larger than the padded %lldx%lld input", a->kh, a->kw, hp, wp);
    long long ho = (hp - a->kh) / a->stride + 1, wo = (wp - a->kw) / a->stride + 1;
    long long taps = (long long)a->c_in * a->kh * a->kw;
    if (ho * wo > INT_MAX || taps > INT_MAX)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "conv2d: %lldx%lld output or %lld taps exceed the GEMM index range", ho, wo, taps);
    *h_out = (int)ho;
    *w_out = (int)wo;
    return DIFFUSE_OK;
}

/* dst[x] = src[x*stride + off] for x < w_out, 0 where that index falls
 * outside the input row src[0..w). */
static void im2col_row(const float *src, int w, int stride, int off, int w_out, float *dst) {
    if (stride != 1) {
        for (int x = 0; x < w_out; x++) {
            int ix = x * stride + off;
            dst[x] = (ix >= 0 && ix < w) ? src[ix] : 0.0f;
        }
        return;
    }
    int x0 = off < 0 ? -off : 0; /* first x reading inside the row */
    int x1 = w - off;            /* first x reading past its end */
    if (x0 > w_out) x0 = w_out;
    if (x1 > w_out) x1 = w_out;
    if (x1 < x0) x1 = x0;
    memset(dst, 0, (size_t)x0 * sizeof *dst);
    if (x1 > x0) memcpy(dst + x0, src + x0 + off, (size_t)(x1 - x0) * sizeof *dst);
    memset(dst + x1, 0, (size_t)(w_out - x1) * sizeof *dst);
}

/* im2col_row with the row wrapping around (circular padding along x). */
static void im2col_row_circular(const float *src, int w, int stride, int off, int w_out, float *dst) {
    for (int x = 0; x < w_out; x++) {
        int ix = (x * stride + off) % w;
        dst[x] = src[ix < 0 ? ix + w : ix];
    }
}

/* col (K, rows*w_out), K = c_in*kh*kw with row k = (ci*kh + ky)*kw + kx:
 * the input taps of output rows [y0, y0+rows) of one image in (C_in, H, W). */
static void im2col_band(const bk_backend *bk, const bk_conv2d_args *a, const float *in, int w_out, int y0,
                        int rows, float *col) {
    const int K = a->c_in * a->kh * a->kw;
    const size_t ld = (size_t)rows * w_out;
#pragma omp parallel for collapse(2) schedule(static) num_threads(bk->n_threads) \
    if ((size_t)K * ld > CPU_PAR_MIN)
    for (int k = 0; k < K; k++) {
        for (int r = 0; r < rows; r++) {
            const int kx = k % a->kw, ky = (k / a->kw) % a->kh, ci = k / (a->kw * a->kh);
            int iy = (y0 + r) * a->stride - a->pad_top + ky;
            float *dst = col + (size_t)k * ld + (size_t)r * w_out;
            if (a->circular_y) iy = ((iy % a->h) + a->h) % a->h;
            if (iy < 0 || iy >= a->h) {
                memset(dst, 0, (size_t)w_out * sizeof *dst);
                continue;
            }
            const float *src = in + ((size_t)ci * a->h + iy) * a->w;
            if (a->circular_x)
                im2col_row_circular(src, a->w, a->stride, kx - a->pad_left, w_out, dst);
            else
                im2col_row(src, a->w, a->stride, kx - a->pad_left, w_out, dst);
        }
    }
}

/* out (C_out, HW) = bias broadcast along rows; the GEMMs then add onto it. */
static void fill_bias(const bk_backend *bk, const float *bias, float *out, int c_out, int hw) {
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) \
    if ((size_t)c_out * hw > CPU_PAR_MIN)
    for (int co = 0; co < c_out; co++) {
        float *row = out + (size_t)co * hw;
        for (int i = 0; i < hw; i++) row[i] = bias[co];
    }
}

/* 1x1, stride 1, no padding: out[n] (C_out, HW) = W (C_out, C_in) x in[n] (C_in, HW). */
static diffuse_status conv1x1(bk_backend *bk, const bk_conv2d_args *a) {
    const int hw = a->h * a->w;
    for (int n = 0; n < a->n; n++) {
        const float *in = a->in + (size_t)n * a->c_in * hw;
        float *out = a->out + (size_t)n * a->c_out * hw;
        if (a->bias) fill_bias(bk, a->bias, out, a->c_out, hw);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->c_out, hw, a->c_in, 1.0f, a->weight,
                    a->c_in, in, hw, a->bias ? 1.0f : 0.0f, out, hw);
    }
    return DIFFUSE_OK;
}

/* Output rows per im2col band: as many as CONV_SCRATCH_MAX (or the arena's
 * free space) holds, at least 1 (bk_alloc then reports a too-small arena). */
static int conv_band_rows(const bk_backend *bk, size_t row_bytes, int h_out) {
    size_t budget = cpu_arena_free(bk);
    if (budget > CONV_SCRATCH_MAX) budget = CONV_SCRATCH_MAX;
    size_t rows = budget / row_bytes;
    if (rows < 1) rows = 1;
    if (rows > (size_t)h_out) rows = (size_t)h_out;
    return (int)rows;
}

diffuse_status cpu_conv2d(bk_backend *bk, const bk_conv2d_args *a) {
    int h_out = 0, w_out = 0;
    diffuse_status st = conv_check(bk, a, &h_out, &w_out);
    if (st != DIFFUSE_OK) return st;
    if (a->kh == 1 && a->kw == 1 && a->stride == 1 && !a->pad_top && !a->pad_bottom && !a->pad_left &&
        !a->pad_right)
        return conv1x1(bk, a);

    const int K = a->c_in * a->kh * a->kw, hw_out = h_out * w_out;
    const size_t row_bytes = (size_t)K * w_out * sizeof(float);
    const int band = conv_band_rows(bk, row_bytes, h_out);
    const size_t mark = bk_mark(bk);
    float *col = bk_alloc(bk, (size_t)band * row_bytes); /* (K, band*w_out) */
    if (!col) return df_fail_prefix(&bk->err, "conv2d im2col (%d taps x %d columns): ", K, w_out);

    for (int n = 0; n < a->n; n++) {
        const float *in = a->in + (size_t)n * a->c_in * a->h * a->w;
        float *out = a->out + (size_t)n * a->c_out * hw_out; /* (C_out, h_out*w_out) */
        if (a->bias) fill_bias(bk, a->bias, out, a->c_out, hw_out);
        for (int y0 = 0; y0 < h_out; y0 += band) {
            const int rows = h_out - y0 < band ? h_out - y0 : band;
            im2col_band(bk, a, in, w_out, y0, rows, col);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->c_out, rows * w_out, K, 1.0f,
                        a->weight, K, col, rows * w_out, a->bias ? 1.0f : 0.0f, out + (size_t)y0 * w_out,
                        hw_out);
        }
    }
    bk_release(bk, mark);
    return DIFFUSE_OK;
}
