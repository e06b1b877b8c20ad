/*
 * fused_ops.cu - the small memory-bound ops around attention and the convs:
 * GEGLU, bias + residual add, nearest upsample x2 and channel concat, each
 * one grid-stride pass in fp32, fp16 or bf16 (math in fp32).
 */
#include "dk_cuda.cuh"

#include <math.h>

namespace {

constexpr int kThreads = 256;

/* Blocks for @n elements, capped: the grid-stride loops cover the rest. */
unsigned grid_for(size_t n) {
    const size_t b = (n + kThreads - 1) / kThreads;
    return b < 4096 ? (unsigned)b : 4096u;
}

#define DK_GRID_STRIDE(i, n)                                                                                           \
    for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < (n); i += (size_t)gridDim.x * kThreads)

/* Exact GELU written with erfc (as the CPU backend): no cancellation for x << 0. */
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * erfcf(-x * 0.70710678118654752f); }

template <class T> __global__ void geglu_kernel(const T *in, T *out, int m, int d) {
    DK_GRID_STRIDE(i, (size_t)m * d) {
        const size_t r = i / d, j = i % d;
        const float h = dk::to_f32(in[r * 2 * d + j]), gate = dk::to_f32(in[r * 2 * d + d + j]);
        out[i] = dk::from_f32<T>(h * gelu_erf(gate));
    }
}

template <class T> __global__ void bias_residual_kernel(dk_bias_residual_params p) {
    const T *in = static_cast<const T *>(p.in), *bias = static_cast<const T *>(p.bias);
    const T *res = static_cast<const T *>(p.residual);
    T *out = static_cast<T *>(p.out);
    DK_GRID_STRIDE(i, p.n) {
        float v = dk::to_f32(in[i]);
        if (bias) v += dk::to_f32(bias[i / (size_t)p.inner % (size_t)p.nbias]);
        if (res) v += dk::to_f32(res[i]);
        out[i] = dk::from_f32<T>(v);
    }
}

template <class T> __global__ void upsample2x_kernel(const T *in, T *out, int nc, int h, int w) {
    const size_t ow = 2 * (size_t)w, oh = 2 * (size_t)h;
    DK_GRID_STRIDE(i, (size_t)nc * oh * ow) {
        const size_t x = i % ow, y = i / ow % oh, c = i / (ow * oh);
        out[i] = in[(c * h + y / 2) * w + x / 2];
    }
}

template <class T> __global__ void concat_kernel(const T *a, const T *b, T *out, int n, int ca, int cb, int hw) {
    const size_t per = (size_t)(ca + cb) * hw; // one sample of out
    DK_GRID_STRIDE(i, (size_t)n * per) {
        const size_t s = i / per, ch = i % per / hw, px = i % hw;
        out[i] = ch < (size_t)ca ? a[(s * ca + ch) * hw + px] : b[(s * cb + ch - ca) * hw + px];
    }
}

template <class T> int geglu(const void *in, void *out, int m, int d, cudaStream_t stream) {
    DK_LAUNCH((geglu_kernel<T>), dim3(grid_for((size_t)m * d)), dim3(kThreads), 0, stream, static_cast<const T *>(in),
              static_cast<T *>(out), m, d);
    return (int)cudaGetLastError();
}

template <class T> int bias_residual(const dk_bias_residual_params *p, cudaStream_t stream) {
    DK_LAUNCH((bias_residual_kernel<T>), dim3(grid_for(p->n)), dim3(kThreads), 0, stream, *p);
    return (int)cudaGetLastError();
}

template <class T> int upsample2x(const void *in, void *out, int nc, int h, int w, cudaStream_t stream) {
    DK_LAUNCH((upsample2x_kernel<T>), dim3(grid_for((size_t)nc * h * w * 4)), dim3(kThreads), 0, stream,
              static_cast<const T *>(in), static_cast<T *>(out), nc, h, w);
    return (int)cudaGetLastError();
}

template <class T>
int concat(const void *a, const void *b, void *out, int n, int ca, int cb, int hw, cudaStream_t stream) {
    DK_LAUNCH((concat_kernel<T>), dim3(grid_for((size_t)n * (ca + cb) * hw)), dim3(kThreads), 0, stream,
              static_cast<const T *>(a), static_cast<const T *>(b), static_cast<T *>(out), n, ca, cb, hw);
    return (int)cudaGetLastError();
}

} // namespace

#define DK_DISPATCH(dtype, fn, ...)                                                                                    \
    switch (dtype) {                                                                                                   \
    case DK_F32: return fn<float>(__VA_ARGS__);                                                                        \
    case DK_F16: return fn<__half>(__VA_ARGS__);                                                                       \
    case DK_BF16: return fn<__nv_bfloat16>(__VA_ARGS__);                                                               \
    }                                                                                                                  \
    return (int)cudaErrorInvalidValue

extern "C" int dk_geglu(const void *in, void *out, int m, int d, dk_dtype dtype, cudaStream_t stream) {
    DK_CHECK_ARG(in && out && m > 0 && d > 0);
    DK_DISPATCH(dtype, geglu, in, out, m, d, stream);
}

extern "C" int dk_bias_residual(const dk_bias_residual_params *p, cudaStream_t stream) {
    DK_CHECK_ARG(p && p->in && p->out && p->n > 0);
    DK_CHECK_ARG(!p->bias || (p->inner > 0 && p->nbias > 0));
    DK_DISPATCH(p->dtype, bias_residual, p, stream);
}

extern "C" int dk_upsample2x(const void *in, void *out, int nc, int h, int w, dk_dtype dtype, cudaStream_t stream) {
    DK_CHECK_ARG(in && out && nc > 0 && h > 0 && w > 0);
    DK_DISPATCH(dtype, upsample2x, in, out, nc, h, w, stream);
}

extern "C" int dk_concat(const void *a, const void *b, void *out, int n, int ca, int cb, int hw, dk_dtype dtype,
                         cudaStream_t stream) {
    DK_CHECK_ARG(a && b && out && n > 0 && ca > 0 && cb > 0 && hw > 0);
    DK_DISPATCH(dtype, concat, a, b, out, n, ca, cb, hw, stream);
}
