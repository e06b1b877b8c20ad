/*
 * group_norm.cu - group normalisation with optional fused SiLU, the CUDA
 * kernel behind bk_ops.group_norm (see lib/backend.h for the contract).
 * One block per (sample, group); statistics in fp32 with a two-pass
 * mean/variance over the group's C/G * HW values; fp32 tensors, NCHW.
 */
#include "kernels.h"

#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256; // 8 warps: enough to saturate one SM's loads for HW >= 1024

// Sum of @v over the block; every thread gets the result. @shared holds kThreads/32 floats.
__device__ float block_sum(float v, float *shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; w++) total += shared[w];
    __syncthreads(); // shared is reused by the next call
    return total;
}

__global__ void group_norm_kernel(dk_group_norm_params p) {
    __shared__ float partial[kThreads / 32];
    const int n = blockIdx.x / p.groups, g = blockIdx.x % p.groups;
    const int cpg = p.c / p.groups;               // channels per group
    const long long count = (long long)cpg * p.hw; // values in this (n, g)
    const long long base = ((long long)n * p.c + (long long)g * cpg) * p.hw;
    const float *x = p.in + base;
    float *y = p.out + base;

    float s = 0.0f;
    for (long long i = threadIdx.x; i < count; i += kThreads) s += x[i];
    const float mean = block_sum(s, partial) / (float)count;
    float ss = 0.0f;
    for (long long i = threadIdx.x; i < count; i += kThreads) {
        const float d = x[i] - mean;
        ss += d * d;
    }
    const float rstd = rsqrtf(block_sum(ss, partial) / (float)count + p.eps);

    for (long long i = threadIdx.x; i < count; i += kThreads) {
        const int ch = g * cpg + (int)(i / p.hw);
        float v = (x[i] - mean) * rstd * p.gamma[ch] + p.beta[ch];
        if (p.fuse_silu) v = v / (1.0f + __expf(-v));
        y[i] = v;
    }
}

} // namespace

extern "C" int dk_group_norm(const dk_group_norm_params *p, cudaStream_t stream) {
    if (p->groups <= 0 || p->c % p->groups != 0 || p->n <= 0 || p->hw <= 0) return (int)cudaErrorInvalidValue;
    group_norm_kernel<<<p->n * p->groups, kThreads, 0, stream>>>(*p);
    return (int)cudaGetLastError();
}
