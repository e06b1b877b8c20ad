/*
 * cuda_kernels.h - the CUDA backend's own small kernels (cuda_kernels.cu):
 * the ops of backend.h that kernels/ has no kernel for. fp32 only (the
 * validation mode). Same conventions as kernels/kernels.h: device pointers,
 * launchers return a cudaError_t as int.
 */
#ifndef DIFFUSE_CUDA_KERNELS_H
#define DIFFUSE_CUDA_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = f(in[i]); kind 0 GELU (erf), 1 quick GELU, 2 SiLU (bk_unary). */
int cuk_unary(int kind, const float *in, float *out, size_t n, cudaStream_t stream);
/* out[i] = in[i] * s + b. */
int cuk_scale(const float *in, float *out, size_t n, float s, float b, cudaStream_t stream);
/* in (N, R, K) -> out (N, K, R). */
int cuk_transpose(const float *in, float *out, int n, int r, int k, cudaStream_t stream);
/* out[b, s, :] = table[ids[b*seq + s], :] + pos[s, :] (pos may be NULL);
 * ids in device memory, each in [0, rows). */
int cuk_embedding(const int32_t *ids, const float *table, const float *pos, float *out, int batch, int seq, int dim,
                  cudaStream_t stream);

/* Direct convolution (any padding, any stride, zero or circular padding),
 * bias included: the path for what cuDNN's legacy API cannot express
 * (asymmetric and circular padding). */
typedef struct cuk_conv_params {
    const float *in;     /* (N, Cin, H, W) */
    const float *weight; /* (Cout, Cin, KH, KW) */
    const float *bias;   /* (Cout) or NULL */
    float *out;          /* (N, Cout, Hout, Wout) */
    int n, c_in, h, w, c_out, kh, kw, stride, pad_top, pad_left, h_out, w_out;
    int circular_x, circular_y; /* 1: outside reads wrap around (pads <= the side) */
} cuk_conv_params;
int cuk_conv2d_direct(const cuk_conv_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* DIFFUSE_CUDA_KERNELS_H */
