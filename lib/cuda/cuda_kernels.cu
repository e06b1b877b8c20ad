/*
 * cuda_kernels.cu - the CUDA backend's own small kernels (cuda_kernels.h).
 * Like the files in kernels/ this compiles with nvcc and, as host C++, against the
 * SIMT emulator (kernels/emu): launch only through DK_LAUNCH.
 */
#include "dk_cuda.cuh"

#include "cuda_kernels.h"

#include <math.h>

namespace {

constexpr int kThreads = 256;

/* Blocks for @n elements; capped, the grid-stride loops cover the rest. The
 * emulator runs every thread as a fiber, so there fewer, longer-lived
 * threads are much cheaper and the cap is lower. */
unsigned grid_for(size_t n) {
#ifdef DK_EMU
    const size_t cap = 64;
#else
    const size_t cap = 4096;
#endif
    const size_t b = (n + kThreads - 1) / kThreads;
    return b == 0 ? 1u : b < cap ? (unsigned)b : (unsigned)cap;
}

#define CUK_GRID_STRIDE(i, n)                                                                                          \
    for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < (n); i += (size_t)gridDim.x * kThreads)

/* The CPU backend's definitions (lib/cpu/cpu_elementwise.c). */
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * erfcf(-x * 0.70710678118654752f); }
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float quick_gelu(float x) { return x / (1.0f + expf(-1.702f * x)); }

__global__ void unary_kernel(int kind, const float *in, float *out, size_t n) {
    CUK_GRID_STRIDE(i, n) {
        const float x = in[i];
        out[i] = kind == 0 ? gelu_erf(x) : kind == 1 ? quick_gelu(x) : silu(x);
    }
}

__global__ void scale_kernel(const float *in, float *out, size_t n, float s, float b) {
    CUK_GRID_STRIDE(i, n) out[i] = in[i] * s + b;
}

/* 32x32 tiles through shared memory (padded against bank conflicts); block
 * (32, 8), each thread moves 4 elements. */
__global__ void transpose_kernel(const float *in, float *out, int r, int k) {
    DK_SHARED(float, tile, [32][33]);
    const size_t plane = (size_t)r * k;
    const float *src = in + (size_t)blockIdx.z * plane;
    float *dst = out + (size_t)blockIdx.z * plane;
    const int k0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int row = r0 + j, col = k0 + threadIdx.x;
        if (row < r && col < k) tile[j][threadIdx.x] = src[(size_t)row * k + col];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int row = k0 + j, col = r0 + threadIdx.x; /* out (K, R) */
        if (row < k && col < r) dst[(size_t)row * r + col] = tile[threadIdx.x][j];
    }
}

__global__ void embedding_kernel(const int32_t *ids, const float *table, const float *pos, float *out, int seq,
                                 int dim, size_t n) {
    CUK_GRID_STRIDE(i, n) {
        const size_t row = i / dim, d = i % dim, s = row % seq;
        float v = table[(size_t)ids[row] * dim + d];
        if (pos) v += pos[s * dim + d];
        out[i] = v;
    }
}

__global__ void conv_direct_kernel(cuk_conv_params p, size_t n) {
    CUK_GRID_STRIDE(i, n) {
        const int x = (int)(i % p.w_out), y = (int)(i / p.w_out % p.h_out);
        const int co = (int)(i / ((size_t)p.w_out * p.h_out) % p.c_out);
        const size_t b = i / ((size_t)p.w_out * p.h_out * p.c_out);
        float acc = 0.0f;
        for (int ci = 0; ci < p.c_in; ci++) {
            const float *src = p.in + (b * p.c_in + ci) * (size_t)p.h * p.w;
            const float *wt = p.weight + ((size_t)co * p.c_in + ci) * p.kh * p.kw;
            for (int ky = 0; ky < p.kh; ky++) {
                int iy = y * p.stride - p.pad_top + ky;
                if (p.circular_y) iy = (iy % p.h + p.h) % p.h;
                if (iy < 0 || iy >= p.h) continue;
                for (int kx = 0; kx < p.kw; kx++) {
                    int ix = x * p.stride - p.pad_left + kx;
                    if (p.circular_x) ix = (ix % p.w + p.w) % p.w;
                    if (ix >= 0 && ix < p.w) acc += wt[ky * p.kw + kx] * src[(size_t)iy * p.w + ix];
                }
            }
        }
        p.out[i] = acc + (p.bias ? p.bias[co] : 0.0f);
    }
}

} // namespace

extern "C" int cuk_unary(int kind, const float *in, float *out, size_t n, cudaStream_t stream) {
    if (kind < 0 || kind > 2 || !in || !out) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    DK_LAUNCH(unary_kernel, grid_for(n), kThreads, 0, stream, kind, in, out, n);
    return (int)cudaGetLastError();
}

extern "C" int cuk_scale(const float *in, float *out, size_t n, float s, float b, cudaStream_t stream) {
    if (!in || !out) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    DK_LAUNCH(scale_kernel, grid_for(n), kThreads, 0, stream, in, out, n, s, b);
    return (int)cudaGetLastError();
}

extern "C" int cuk_transpose(const float *in, float *out, int n, int r, int k, cudaStream_t stream) {
    if (!in || !out || n <= 0 || r <= 0 || k <= 0 || n > 65535 || (r + 31) / 32 > 65535)
        return (int)cudaErrorInvalidValue;
    const dim3 grid((unsigned)(k + 31) / 32, (unsigned)(r + 31) / 32, (unsigned)n), block(32, 8);
    DK_LAUNCH(transpose_kernel, grid, block, 0, stream, in, out, r, k);
    return (int)cudaGetLastError();
}

extern "C" int cuk_embedding(const int32_t *ids, const float *table, const float *pos, float *out, int batch, int seq,
                             int dim, cudaStream_t stream) {
    if (!ids || !table || !out || batch <= 0 || seq <= 0 || dim <= 0) return (int)cudaErrorInvalidValue;
    const size_t n = (size_t)batch * seq * dim;
    DK_LAUNCH(embedding_kernel, grid_for(n), kThreads, 0, stream, ids, table, pos, out, seq, dim, n);
    return (int)cudaGetLastError();
}

extern "C" int cuk_conv2d_direct(const cuk_conv_params *p, cudaStream_t stream) {
    if (!p || !p->in || !p->weight || !p->out || p->n <= 0 || p->c_in <= 0 || p->c_out <= 0 || p->h_out <= 0 ||
        p->w_out <= 0 || p->stride <= 0)
        return (int)cudaErrorInvalidValue;
    const size_t n = (size_t)p->n * p->c_out * p->h_out * p->w_out;
    DK_LAUNCH(conv_direct_kernel, grid_for(n), kThreads, 0, stream, *p, n);
    return (int)cudaGetLastError();
}
