/*
 * dk_cuda.cuh - what every kernel file in kernels/ shares: the one launch
 * macro, shared-memory declarations, element-type traits (math is always in
 * fp32) and the inline-PTX wrappers. Each of these has a second definition
 * for the SIMT emulator (emu/cuda_emu.h, DK_EMU defined), so the same .cu
 * file compiles with nvcc for the GPU and with g++ for the CPU tests.
 */
#ifndef DIFFUSE_DK_CUDA_CUH
#define DIFFUSE_DK_CUDA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* Every kernel launches through DK_LAUNCH (the emulator's launcher takes the
 * kernel's name for its reports). A template instance goes in parentheses:
 * DK_LAUNCH((attention_kernel<T, 64>), grid, block, 0, stream, p). */
#ifdef DK_EMU
#define DK_LAUNCH(kernel, grid, block, smem, stream, ...)                                                              \
    ::emu::launch(#kernel, kernel, grid, block, smem, stream, __VA_ARGS__)
#else
#define DK_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif

/* DK_SHARED(float, tile, [64][72]) declares `__shared__ float tile[64][72]`;
 * the emulator registers the array so it is poisoned at every block start. */
#ifdef DK_EMU
#define DK_SHARED(type, name, dims)                                                                                    \
    using name##_emu_t = type dims;                                                                                    \
    static ::emu::shared_var<name##_emu_t> name##_emu_v;                                                               \
    name##_emu_t &name = name##_emu_v.v
#else
#define DK_SHARED(type, name, dims) __shared__ __align__(16) type name dims
#endif

/* DK_SHARED_DYNAMIC(float, buf) declares the launch's dynamic shared memory
 * (the smem argument of DK_LAUNCH) as `buf`, a pointer-like array. */
#ifdef DK_EMU
#define DK_SHARED_DYNAMIC(type, name) type *name = static_cast<type *>(::emu::dynamic_shared())
#else
#define DK_SHARED_DYNAMIC(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace dk {

/* --- element types: storage T, arithmetic in float ------------------------ */

template <class T> struct elem;
template <> struct elem<float> {
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
};
template <> struct elem<__half> {
    static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
    static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
    static __device__ __forceinline__ unsigned short bits(__half v) { return __half_as_ushort(v); }
};
template <> struct elem<__nv_bfloat16> {
    static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
    static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
    static __device__ __forceinline__ unsigned short bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
};

template <class T> __device__ __forceinline__ float to_f32(T v) { return elem<T>::load(v); }
template <class T> __device__ __forceinline__ T from_f32(float v) { return elem<T>::store(v); }

/* Two 16-bit elements in one 32-bit MMA register, @lo in the low half
 * (the lower-indexed element of a fragment pair). */
template <class T> __device__ __forceinline__ uint32_t pack2(T lo, T hi) {
    return (uint32_t)elem<T>::bits(lo) | ((uint32_t)elem<T>::bits(hi) << 16);
}
template <class T> __device__ __forceinline__ uint32_t pack2_f32(float lo, float hi) {
    return pack2<T>(from_f32<T>(lo), from_f32<T>(hi));
}

/* --- tensor cores ------------------------------------------------------- */

/* d (16x8 f32) += a (16x16) * b (16x8) for one warp, fragments in the PTX
 * layouts of mma.m16n8k16 (row.col): see emu/cuda_emu.cpp resolve_mma for
 * the element-to-lane map. All 32 lanes must call it together. */
template <class T> __device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]);

template <> __device__ __forceinline__ void mma_m16n8k16<__half>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#ifdef DK_EMU
    ::emu::mma_m16n8k16(::emu::COLL_MMA_F16, d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
    __trap(); /* sm_80+ only; the build targets sm_80 and newer */
#endif
}

template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#ifdef DK_EMU
    ::emu::mma_m16n8k16(::emu::COLL_MMA_BF16, d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

/* A fragment-ready load of four 8x8 b16 matrices from shared memory
 * (ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16): lane l passes the
 * address of row l % 8 of matrix l / 8 (16 contiguous, 16-byte aligned
 * bytes); r[i] receives matrix i as the mma fragments want it: elements
 * (row lane/4, columns 2*(lane%4), +1), or with kTrans the transpose
 * (rows 2*(lane%4), +1, column lane/4). All 32 lanes call it together. */
template <bool kTrans> __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *row) {
#ifdef DK_EMU
    ::emu::ldmatrix_x4(r, row, kTrans);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
    const unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    if constexpr (kTrans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

/* 16 bytes from @src to @dst, both 16-byte aligned (one vector load/store on
 * the GPU; memcpy on the emulator, where type punning would be UB). */
__device__ __forceinline__ void copy16(void *dst, const void *src) {
#ifdef DK_EMU
    memcpy(dst, src, 16);
#else
    *static_cast<uint4 *>(dst) = *static_cast<const uint4 *>(src);
#endif
}

/* --- reductions ----------------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum of @v over a block of @kThreads threads; every thread gets the result.
 * @scratch holds kThreads/32 floats. Ends with a barrier, so the caller may
 * reuse @scratch at once. */
template <int kThreads> __device__ __forceinline__ float block_sum(float v, float *scratch) {
    static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
    v = warp_sum(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; w++) total += scratch[w];
    __syncthreads();
    return total;
}

__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

} // namespace dk

/* Launchers return cudaError_t as int: a bad argument is cudaErrorInvalidValue. */
#define DK_CHECK_ARG(cond)                                                                                             \
    do {                                                                                                               \
        if (!(cond)) return (int)cudaErrorInvalidValue;                                                                \
    } while (0)

#endif /* DIFFUSE_DK_CUDA_CUH */
