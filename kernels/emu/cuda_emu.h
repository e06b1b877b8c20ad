/*
 * cuda_emu.h - the SIMT emulator: lets the .cu files in kernels/ compile as
 * host C++ (g++, no CUDA toolkit) and run on the CPU, so CI checks kernels on
 * machines without a GPU (DESIGN.md section 6.2, docs/cuda.md).
 *
 * Each block's threads run as cooperative fibers (ucontext), one block at a
 * time. A fiber runs until it reaches a barrier (__syncthreads), a warp
 * collective (__shfl_*_sync, __syncwarp, mma.sync) or its end; then another
 * runs. Warps advance independently in a seeded random order (one warp may
 * run several collectives ahead of the others), lanes in a shuffled order,
 * and shared memory is poisoned with 0xff bytes (NaN in
 * fp32/fp16/bf16) at every block start, so a missing barrier or a read of
 * unwritten shared memory shows up as a wrong result. Warp collectives check
 * that every lane named in the mask arrives at the same kind of collective
 * with the same mask; a block that cannot make progress is reported as a
 * deadlock with the place each warp waits at. Memory from cudaMalloc (or
 * emu_malloc) sits between guard pages with canary bytes around it, so
 * out-of-range writes are reported (canaries are checked after each launch,
 * guard-page hits stop the program with a report).
 *
 * The kernels see this header through the shims in emu/include
 * (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h); the runtime is cuda_emu.cpp.
 */
#ifndef DIFFUSE_CUDA_EMU_H
#define DIFFUSE_CUDA_EMU_H

#include <stddef.h>
#include <stdint.h>

#define DK_EMU 1

/* --- the part C code sees (kernels.h is a C header) ----------------------- */

typedef struct emu_stream_st *cudaStream_t;
typedef struct emu_event_st *cudaEvent_t; /* host clock: launches are synchronous */

/* Values as in the CUDA runtime, so messages and logs read the same. */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

#ifdef __cplusplus
extern "C" {
#endif

/* Device memory: page-aligned mappings, the data between guard pages, with
 * canary bytes filling the rest of the mapping; fresh memory is 0xff-filled
 * (NaN). emu_malloc returns NULL on failure. */
void *emu_malloc(size_t bytes);
void emu_free(void *p);
/* Checks every live allocation's canaries; returns the number corrupted and
 * reports each (which allocation, how far out of range). */
int emu_check_canaries(void);
/* Seed of the fiber order (default 1, or the EMU_SEED environment variable). */
void emu_set_seed(uint64_t seed);
/* 1 (default): shuffled fiber order; 0: thread-index order (EMU_ORDER=linear). */
void emu_set_shuffle(int on);
/* Message of the last failed launch ("" when none). */
const char *emu_last_error_message(void);
/* Counters: launches run, blocks run, fiber switches. */
void emu_stats(uint64_t *launches, uint64_t *blocks, uint64_t *switches);
/* Device memory accounting: bytes cudaMalloc'ed and not yet freed (as asked
 * for), the most that were live at once since the last reset, and the
 * number of live allocations. Any pointer may be NULL. */
void emu_memory(uint64_t *live, uint64_t *peak, uint64_t *count);
/* Starts a new peak at the bytes live now. */
void emu_memory_reset_peak(void);
/* Emulated device size: cudaMalloc fails with cudaErrorMemoryAllocation when
 * the live bytes would exceed @bytes; cudaMemGetInfo and the device's
 * totalGlobalMem report it. 0 (default): the host's RAM (or EMU_DEVICE_MEMORY
 * bytes from the environment). */
void emu_set_device_memory(uint64_t bytes);

cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);

/* Streams and devices, for the CUDA backend (lib/cuda): one emulated device
 * (index 0); streams are tokens, every call is synchronous. */
#define cudaStreamDefault 0x0
#define cudaStreamNonBlocking 0x1
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
    int multiProcessorCount;
};
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus

#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

/* --- built-in variables and qualifiers ------------------------------------ */

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern uint3 blockIdx;
extern dim3 blockDim, gridDim;
extern uint3 *emu_thread_idx; /* the running fiber's index */
#define threadIdx (*emu_thread_idx)
constexpr int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
/* Shared memory must be declared with DK_SHARED (kernels/dk_cuda.cuh): the
 * emulator needs to know every shared array to poison it. */
#define __shared__ use_DK_SHARED_instead_of___shared__

/* --- fp16 and bf16 (round-to-nearest-even conversions) -------------------- */

struct __half {
    unsigned short __x;
};
struct __nv_bfloat16 {
    unsigned short __x;
};

namespace emu {
unsigned short float_to_half_bits(float f);
float half_bits_to_float(unsigned short h);
unsigned short float_to_bf16_bits(float f);
float bf16_bits_to_float(unsigned short h);
} // namespace emu

inline __half __float2half_rn(float f) { return __half{emu::float_to_half_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return emu::half_bits_to_float(h.__x); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{emu::float_to_bf16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return emu::bf16_bits_to_float(h.__x); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }

/* --- math intrinsics (host libm; the fast variants are the exact ones) ---- */

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }

/* --- the fiber runtime ---------------------------------------------------- */

namespace emu {

/* Warp collective kinds (also the names in reports). */
enum collective { COLL_SHFL = 0, COLL_SYNCWARP, COLL_BALLOT, COLL_MMA_F16, COLL_MMA_BF16, COLL_LDMATRIX };
enum shfl_mode { SHFL_IDX = 0, SHFL_XOR, SHFL_DOWN, SHFL_UP };

/* Call sites (@file, @line) appear in deadlock and divergence reports. */
void syncthreads(const char *file, int line);
/* Shuffle of an 8-byte payload; @arg is the lane, xor mask or delta. */
uint64_t shfl(unsigned mask, uint64_t v, shfl_mode mode, int arg, int width, const char *file, int line);
void syncwarp(unsigned mask, const char *file, int line);
unsigned ballot(unsigned mask, int pred, const char *file, int line);
/* mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 with
 * d = c: every lane gives its A (4 regs), B (2 regs) and C (4 floats)
 * fragments in the PTX layouts and gets its D fragment back. */
void mma_m16n8k16(collective kind, float d[4], const uint32_t a[4], const uint32_t b[2]);
/* ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives @row, the
 * address of row l % 8 of 8x8 matrix l / 8 (16 bytes, 16-byte aligned, in
 * shared memory); r[i] gets from matrix i the elements (row lane/4, columns
 * 2*(lane%4) and +1), or with @trans (rows 2*(lane%4) and +1, column lane/4),
 * the lower-indexed one in the low half. */
void ldmatrix_x4(uint32_t r[4], const void *row, bool trans);
/* Registers @bytes of shared memory (a DK_SHARED array) to be poisoned at
 * every block start, and poisons it now. */
void shared_register(void *p, size_t bytes);
/* The launch's dynamic shared memory (poisoned at every block start). */
void *dynamic_shared();

/* Runs @body(@ctx) for every thread of @grid x @block; returns the launch status. */
cudaError_t launch_erased(const char *name, dim3 grid, dim3 block, size_t dyn_smem, void (*body)(void *), void *ctx);

template <class T> struct shared_var {
    alignas(16) T v;
    shared_var() { shared_register(&v, sizeof(T)); }
};

template <class K, class Tuple> struct launch_ctx {
    K kernel;
    Tuple *args;
};

/* A launch: the arguments are converted once to the kernel's parameter types;
 * each thread's call copies them, as each CUDA thread has its own copy. */
template <class... P, class... A>
cudaError_t launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   A &&...a) {
    (void)stream;
    using tuple_t = std::tuple<typename std::decay<P>::type...>;
    tuple_t args(std::forward<A>(a)...);
    launch_ctx<void (*)(P...), tuple_t> c{kernel, &args};
    auto body = [](void *p) {
        auto *lc = static_cast<launch_ctx<void (*)(P...), tuple_t> *>(p);
        std::apply(lc->kernel, *lc->args);
    };
    return launch_erased(name, grid, block, smem, body, &c);
}

template <class T> uint64_t to_payload(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type over 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <class T> T from_payload(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

} // namespace emu

#define EMU_SITE const char *file_ = __builtin_FILE(), int line_ = __builtin_LINE()
inline void __syncthreads(EMU_SITE) { emu::syncthreads(file_, line_); }
inline void __syncwarp(unsigned mask = 0xffffffffu, EMU_SITE) { emu::syncwarp(mask, file_, line_); }
inline unsigned __ballot_sync(unsigned mask, int pred, EMU_SITE) { return emu::ballot(mask, pred, file_, line_); }
template <class T> T __shfl_sync(unsigned mask, T v, int lane, int width = 32, EMU_SITE) {
    return emu::from_payload<T>(emu::shfl(mask, emu::to_payload(v), emu::SHFL_IDX, lane, width, file_, line_));
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, EMU_SITE) {
    return emu::from_payload<T>(emu::shfl(mask, emu::to_payload(v), emu::SHFL_XOR, lane_mask, width, file_, line_));
}
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, EMU_SITE) {
    return emu::from_payload<T>(emu::shfl(mask, emu::to_payload(v), emu::SHFL_DOWN, (int)delta, width, file_, line_));
}
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, EMU_SITE) {
    return emu::from_payload<T>(emu::shfl(mask, emu::to_payload(v), emu::SHFL_UP, (int)delta, width, file_, line_));
}
#undef EMU_SITE

/* Fibers never preempt each other, so a plain read-modify-write is atomic. */
template <class T> T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T> T atomicMax(T *p, T v) {
    T old = *p;
    *p = old > v ? old : v;
    return old;
}
template <class T> T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}

#endif /* __cplusplus */

#endif /* DIFFUSE_CUDA_EMU_H */
