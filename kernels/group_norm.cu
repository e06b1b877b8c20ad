/*
 * group_norm.cu - group normalisation with optional fused SiLU, the CUDA
 * kernel behind bk_ops.group_norm (see lib/backend.h for the contract).
 * One block per (sample, group); statistics in fp32 with a two-pass
 * mean/variance over the group's C/G * HW values; NCHW in fp32, fp16 or bf16.
 */
#include "dk_cuda.cuh"

namespace {

constexpr int kThreads = 256; // 8 warps: enough to saturate one SM's loads for HW >= 1024

template <class T> __global__ void group_norm_kernel(dk_group_norm_params p) {
    DK_SHARED(float, partial, [kThreads / 32]);
    const int n = blockIdx.x / p.groups, g = blockIdx.x % p.groups;
    const int cpg = p.c / p.groups;                // channels per group
    const long long count = (long long)cpg * p.hw; // values in this (n, g)
    const long long base = ((long long)n * p.c + (long long)g * cpg) * p.hw;
    const T *x = static_cast<const T *>(p.in) + base;
    T *y = static_cast<T *>(p.out) + base;

    float s = 0.0f;
    for (long long i = threadIdx.x; i < count; i += kThreads) s += dk::to_f32(x[i]);
    const float mean = dk::block_sum<kThreads>(s, partial) / (float)count;
    float ss = 0.0f;
    for (long long i = threadIdx.x; i < count; i += kThreads) {
        const float d = dk::to_f32(x[i]) - mean;
        ss += d * d;
    }
    const float rstd = rsqrtf(dk::block_sum<kThreads>(ss, partial) / (float)count + p.eps);

    // in == out is allowed: each element is read (both passes above) before
    // this loop writes it, and only by the thread that writes it.
    for (long long i = threadIdx.x; i < count; i += kThreads) {
        const int ch = g * cpg + (int)(i / p.hw);
        float v = (dk::to_f32(x[i]) - mean) * rstd * p.gamma[ch] + p.beta[ch];
        if (p.fuse_silu) v = v / (1.0f + __expf(-v));
        y[i] = dk::from_f32<T>(v);
    }
}

template <class T> int launch(const dk_group_norm_params *p, cudaStream_t stream) {
    DK_LAUNCH((group_norm_kernel<T>), dim3(p->n * p->groups), dim3(kThreads), 0, stream, *p);
    return (int)cudaGetLastError();
}

} // namespace

extern "C" int dk_group_norm(const dk_group_norm_params *p, cudaStream_t stream) {
    DK_CHECK_ARG(p && p->in && p->out && p->gamma && p->beta);
    DK_CHECK_ARG(p->groups > 0 && p->c % p->groups == 0 && p->n > 0 && p->hw > 0);
    switch (p->dtype) {
    case DK_F32: return launch<float>(p, stream);
    case DK_F16: return launch<__half>(p, stream);
    case DK_BF16: return launch<__nv_bfloat16>(p, stream);
    }
    return (int)cudaErrorInvalidValue;
}
