/*
 * layer_norm.cu - layer norm over the last dim, the kernel behind
 * bk_ops.layer_norm: one warp per row of C values, fp32 two-pass statistics
 * (mean, then mean squared deviation) with warp shuffles, no shared memory.
 */
#include "dk_cuda.cuh"

namespace {

constexpr int kRowsPerBlock = 8; // 8 warps

template <class T> __global__ void layer_norm_kernel(dk_layer_norm_params p) {
    const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= p.m) return; // the whole warp leaves together; no barrier follows
    const T *x = static_cast<const T *>(p.in) + (size_t)row * p.c;
    T *y = static_cast<T *>(p.out) + (size_t)row * p.c;
    float s = 0.0f;
    for (int i = lane; i < p.c; i += 32) s += dk::to_f32(x[i]);
    const float mean = dk::warp_sum(s) / (float)p.c;
    float ss = 0.0f;
    for (int i = lane; i < p.c; i += 32) {
        const float d = dk::to_f32(x[i]) - mean;
        ss += d * d;
    }
    const float rstd = rsqrtf(dk::warp_sum(ss) / (float)p.c + p.eps);
    for (int i = lane; i < p.c; i += 32)
        y[i] = dk::from_f32<T>((dk::to_f32(x[i]) - mean) * rstd * p.gamma[i] + p.beta[i]);
}

template <class T> int launch(const dk_layer_norm_params *p, cudaStream_t stream) {
    DK_LAUNCH((layer_norm_kernel<T>), dim3(dk::ceil_div(p->m, kRowsPerBlock)), dim3(32 * kRowsPerBlock), 0, stream, *p);
    return (int)cudaGetLastError();
}

} // namespace

extern "C" int dk_layer_norm(const dk_layer_norm_params *p, cudaStream_t stream) {
    DK_CHECK_ARG(p && p->in && p->out && p->gamma && p->beta && p->m > 0 && p->c > 0);
    switch (p->dtype) {
    case DK_F32: return launch<float>(p, stream);
    case DK_F16: return launch<__half>(p, stream);
    case DK_BF16: return launch<__nv_bfloat16>(p, stream);
    }
    return (int)cudaErrorInvalidValue;
}
