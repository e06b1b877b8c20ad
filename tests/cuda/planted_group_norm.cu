/*
 * planted_group_norm.cu - a COPY of kernels/group_norm.cu (fp32 only) with
 * two bugs that can be planted at compile time, for test_planted.cpp:
 *   PLANT_MISSING_SYNC: block_sum drops the __syncthreads() between the
 *     warps writing their partial sums and every thread reading them (a
 *     read of data not yet written: poison shows it);
 *   PLANT_MISSING_SYNC_WAR: block_sum drops the __syncthreads() after that
 *     read, so a warp that runs ahead into the second block_sum can
 *     overwrite its partial sum before slower warps have read the first
 *     (a write-after-read race: the warp-level shuffle shows it);
 *   PLANT_OOB: the output loop runs one element too far (i <= count), so the
 *     last group writes one float past the end of the output.
 * Each wrapper (planted_*.cpp) compiles it into its own namespace PLANT_NS.
 * The real kernel stays untouched.
 */
#include "dk_cuda.cuh"

#ifndef PLANT_NS
#error "define PLANT_NS"
#endif

namespace PLANT_NS {

constexpr int kThreads = 256;

__device__ float block_sum(float v, float *shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) shared[warp] = v;
#ifndef PLANT_MISSING_SYNC
    __syncthreads();
#endif
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; w++) total += shared[w];
#ifndef PLANT_MISSING_SYNC_WAR
    __syncthreads();
#endif
    return total;
}

__global__ void group_norm_kernel(dk_group_norm_params p) {
    DK_SHARED(float, partial, [kThreads / 32]);
    const int n = blockIdx.x / p.groups, g = blockIdx.x % p.groups;
    const int cpg = p.c / p.groups;
    const long long count = (long long)cpg * p.hw;
    const long long base = ((long long)n * p.c + (long long)g * cpg) * p.hw;
    const float *x = static_cast<const float *>(p.in) + base;
    float *y = static_cast<float *>(p.out) + base;

    float s = 0.0f;
    for (long long i = threadIdx.x; i < count; i += kThreads) s += x[i];
    const float mean = block_sum(s, partial) / (float)count;
    float ss = 0.0f;
    for (long long i = threadIdx.x; i < count; i += kThreads) {
        const float d = x[i] - mean;
        ss += d * d;
    }
    const float rstd = rsqrtf(block_sum(ss, partial) / (float)count + p.eps);
#ifdef PLANT_OOB
    for (long long i = threadIdx.x; i <= count; i += kThreads) {
#else
    for (long long i = threadIdx.x; i < count; i += kThreads) {
#endif
        const int ch = g * cpg + (int)(i / p.hw);
        const float xi = i < count ? x[i] : 0.0f; // the planted write is the bug, not a stray read
        const int chc = ch < p.c ? ch : p.c - 1;
        float v = (xi - mean) * rstd * p.gamma[chc] + p.beta[chc];
        if (p.fuse_silu) v = v / (1.0f + __expf(-v));
        y[i] = v;
    }
}

int launch(const dk_group_norm_params *p) {
    DK_LAUNCH(group_norm_kernel, dim3(p->n * p->groups), dim3(kThreads), 0, nullptr, *p);
    return (int)cudaGetLastError();
}

} // namespace PLANT_NS
