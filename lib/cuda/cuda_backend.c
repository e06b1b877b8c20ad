/*
 * cuda_backend.c - the CUDA backend (backend.h's op table on a GPU) and the
 * module entry point libdiffuse loads (cuda_module.h).
 *
 * One instance per context: a device, one stream, a cuBLAS and a cuDNN handle
 * bound to that stream, a device arena (bk_backend.arena is device memory;
 * bk_alloc hands out pieces of it, arena_reserve grows it between passes),
 * and a weight cache. Ops receive the host float32 weight pointers of the
 * model (nets never know the backend), so every pointer an op reads is
 * resolved: inside the arena it is device memory already; anything else is a
 * model weight, uploaded on first use into a device pool and found again by
 * its host address afterwards (the first pass uploads, later ones only look up).
 *
 * GEMMs: cublasSgemm; convolutions: cudnnConvolutionForward (NCHW, implicit
 * precomputed GEMM with its workspace from the free arena, implicit GEMM when
 * that does not fit; asymmetric padding goes to a direct kernel); everything
 * else: the kernels of kernels/ and cuda_kernels.cu. Precision: fp32 with
 * TF32 off in both libraries (the validation mode); fp16/bf16 not yet.
 *
 * Errors: every CUDA, cuBLAS and cuDNN status becomes a diffuse_status with a
 * message in bk->err (DIFFUSE_ERR_OUT_OF_MEMORY for allocations, else
 * DIFFUSE_ERR_DEVICE); nothing aborts.
 *
 * The same file builds the emulated module (DK_EMU: kernels on the SIMT
 * emulator, cuBLAS/cuDNN from lib/cuda/emu/shims.c).
 */
#include "cuda_module.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "cuda_kernels.h"
#include "kernels.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DK_EMU
#define CU_NAME "cuda-emu"
#else
#define CU_NAME "cuda"
#endif

#define CU_ALIGN DF_CUDA_ALIGN

typedef struct cu_weight {
    const void *host; /* key; NULL = empty slot */
    size_t bytes;
    void *dev;
} cu_weight;

typedef struct cu_chunk {
    uint8_t *base;
    size_t size, used;
} cu_chunk;

typedef struct cu_backend {
    bk_backend base; /* first: the library sees a bk_backend */
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cu_weight *w; /* open addressing, capacity a power of two */
    size_t w_cap, w_count;
    cu_chunk *chunks;     /* the weight pool: packed chunks and large weights' own */
    size_t n_chunks;
    size_t packing;       /* index of the chunk small weights go to; n_chunks = none */
    size_t weight_bytes;  /* device bytes holding weights */
} cu_backend;

/* ------------------------------------------------------------------ errors */

static diffuse_status cu_fail(bk_backend *bk, diffuse_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static diffuse_status cu_fail(bk_backend *bk, diffuse_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(bk->err.msg, sizeof bk->err.msg, fmt, ap);
    va_end(ap);
    bk->err.status = st;
    return st;
}

static diffuse_status cu_cuda_fail(bk_backend *bk, int e, const char *what) {
    const cudaError_t err = (cudaError_t)e;
    (void)cudaGetLastError(); /* clear a sticky launch error */
#ifdef DK_EMU
    const char *detail = emu_last_error_message();
#else
    const char *detail = "";
#endif
    return cu_fail(bk, err == cudaErrorMemoryAllocation ? DIFFUSE_ERR_OUT_OF_MEMORY : DIFFUSE_ERR_DEVICE,
                   "cuda backend: %s: %s (CUDA error %d)%s%s", what, cudaGetErrorString(err), (int)err,
                   detail && *detail ? ": " : "", detail ? detail : "");
}

#define CU_CUDA(bk, call, what)                                                                                        \
    do {                                                                                                               \
        const int cu_e_ = (int)(call);                                                                                 \
        if (cu_e_ != 0) return cu_cuda_fail((bk), cu_e_, (what));                                                      \
    } while (0)
#define CU_BLAS(bk, call, what)                                                                                        \
    do {                                                                                                               \
        const cublasStatus_t cu_s_ = (call);                                                                           \
        if (cu_s_ != CUBLAS_STATUS_SUCCESS)                                                                            \
            return cu_fail((bk), cu_s_ == CUBLAS_STATUS_ALLOC_FAILED ? DIFFUSE_ERR_OUT_OF_MEMORY : DIFFUSE_ERR_DEVICE, \
                           "cuda backend: %s: %s", (what), cublasGetStatusString(cu_s_));                              \
    } while (0)
#define CU_DNN(bk, call, what)                                                                                         \
    do {                                                                                                               \
        const cudnnStatus_t cu_s_ = (call);                                                                            \
        if (cu_s_ != CUDNN_STATUS_SUCCESS)                                                                             \
            return cu_fail((bk), cu_s_ == CUDNN_STATUS_ALLOC_FAILED ? DIFFUSE_ERR_OUT_OF_MEMORY : DIFFUSE_ERR_DEVICE,  \
                           "cuda backend: %s: %s", (what), cudnnGetErrorString(cu_s_));                                \
    } while (0)
#define CU_TRY(expr)                                                                                                   \
    do {                                                                                                               \
        const diffuse_status cu_t_ = (expr);                                                                           \
        if (cu_t_ != DIFFUSE_OK) return cu_t_;                                                                         \
    } while (0)

/* The calling thread may differ from the last one (jobs run on a worker). */
#define CU_ENTER(b) CU_CUDA(&(b)->base, cudaSetDevice((b)->device), "cudaSetDevice")

static cu_backend *cu_of(bk_backend *bk) { return (cu_backend *)bk; }

/* ------------------------------------------------------------ memory */

static int in_arena(const cu_backend *b, const void *p) {
    const uint8_t *q = (const uint8_t *)p;
    return b->base.arena && q >= b->base.arena && q < b->base.arena + b->base.arena_size;
}

/* Free arena bytes above the top: op scratch (stream-ordered, so the next
 * op may reuse it). */
static void *cu_scratch(cu_backend *b, size_t bytes, size_t *avail) {
    const size_t start = (b->base.arena_used + CU_ALIGN - 1) & ~(size_t)(CU_ALIGN - 1);
    const size_t free_bytes = start >= b->base.arena_size ? 0 : b->base.arena_size - start;
    if (avail) *avail = free_bytes;
    return bytes <= free_bytes ? b->base.arena + start : NULL;
}

/* Device memory the backend holds: every cudaMalloc and cudaFree of the
 * arena and the weight pool goes through here (diffuse_ctx_get_memory). */
static void cu_track(cu_backend *b, size_t add, size_t sub) {
    b->base.device_bytes = b->base.device_bytes + add - sub;
    if (b->base.device_bytes > b->base.device_peak) b->base.device_peak = b->base.device_bytes;
}

/* A weight's device copy (cuda_module.h says how the pool is laid out, and
 * df_cuda_weight_bound what it can cost at most). */
static diffuse_status cu_pool_alloc(cu_backend *b, size_t bytes, void **out) {
    bytes = (bytes + CU_ALIGN - 1) & ~(size_t)(CU_ALIGN - 1);
    const int large = bytes >= DF_CUDA_POOL_LARGE;
    if (!large && b->packing < b->n_chunks) {
        cu_chunk *c = &b->chunks[b->packing];
        if (c->size - c->used >= bytes) {
            *out = c->base + c->used;
            c->used += bytes;
            return DIFFUSE_OK;
        }
    }
    cu_chunk *grown = realloc(b->chunks, (b->n_chunks + 1) * sizeof *grown);
    if (!grown) return cu_fail(&b->base, DIFFUSE_ERR_OUT_OF_MEMORY, "cuda backend: weight pool bookkeeping");
    b->chunks = grown;
    const size_t size = large ? bytes : DF_CUDA_POOL_CHUNK;
    void *mem = NULL;
    CU_CUDA(&b->base, cudaMalloc(&mem, size), "cudaMalloc (weights)");
    cu_track(b, size, 0);
    if (!large) b->packing = b->n_chunks;
    b->chunks[b->n_chunks++] = (cu_chunk){(uint8_t *)mem, size, bytes};
    b->weight_bytes += size;
    *out = mem;
    return DIFFUSE_OK;
}

static size_t cu_hash(const void *p, size_t cap) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static cu_weight *cu_slot(cu_weight *tab, size_t cap, const void *host) {
    size_t i = cu_hash(host, cap);
    while (tab[i].host && tab[i].host != host) i = (i + 1) & (cap - 1);
    return &tab[i];
}

/* The device address of @bytes at @p: @p itself when it is device memory
 * (the arena), else a host weight, uploaded on first use. NULL stays NULL. */
static diffuse_status cu_dev(cu_backend *b, const void *p, size_t bytes, const void **out) {
    *out = p;
    if (!p || in_arena(b, p)) return DIFFUSE_OK;
    for (size_t i = 0; i < b->n_chunks; i++)
        if ((const uint8_t *)p >= b->chunks[i].base && (const uint8_t *)p < b->chunks[i].base + b->chunks[i].size)
            return DIFFUSE_OK;
    if (2 * (b->w_count + 1) > b->w_cap) {
        const size_t cap = b->w_cap ? 2 * b->w_cap : 1024;
        cu_weight *tab = calloc(cap, sizeof *tab);
        if (!tab) return cu_fail(&b->base, DIFFUSE_ERR_OUT_OF_MEMORY, "cuda backend: weight table of %zu", cap);
        for (size_t i = 0; i < b->w_cap; i++)
            if (b->w[i].host) *cu_slot(tab, cap, b->w[i].host) = b->w[i];
        free(b->w);
        b->w = tab;
        b->w_cap = cap;
    }
    cu_weight *s = cu_slot(b->w, b->w_cap, p);
    if (s->host && s->bytes >= bytes) {
        *out = s->dev;
        return DIFFUSE_OK;
    }
    void *dev = NULL;
    CU_TRY(cu_pool_alloc(b, bytes, &dev));
    CU_CUDA(&b->base, cudaMemcpyAsync(dev, p, bytes, cudaMemcpyHostToDevice, b->stream), "uploading a weight");
    if (!s->host) b->w_count++;
    *s = (cu_weight){p, bytes, dev};
    *out = dev;
    return DIFFUSE_OK;
}

#define CU_DEV(b, ptr, floats, var)                                                                                    \
    const float *var;                                                                                                  \
    do {                                                                                                               \
        const void *cu_v_;                                                                                             \
        CU_TRY(cu_dev((b), (ptr), (size_t)(floats) * sizeof(float), &cu_v_));                                          \
        var = (const float *)cu_v_;                                                                                    \
    } while (0)

/* -------------------------------------------------------------- lifetime */

static void cu_destroy(bk_backend *bk) {
    if (!bk) return;
    cu_backend *b = cu_of(bk);
    cudaSetDevice(b->device);
    if (b->stream) cudaStreamSynchronize(b->stream);
    for (size_t i = 0; i < b->n_chunks; i++) cudaFree(b->chunks[i].base);
    free(b->chunks);
    free(b->w);
    if (bk->arena) cudaFree(bk->arena);
    if (b->cd) cudnnDestroyConvolutionDescriptor(b->cd);
    if (b->wd) cudnnDestroyFilterDescriptor(b->wd);
    if (b->yd) cudnnDestroyTensorDescriptor(b->yd);
    if (b->xd) cudnnDestroyTensorDescriptor(b->xd);
    if (b->dnn) cudnnDestroy(b->dnn);
    if (b->blas) cublasDestroy(b->blas);
    if (b->stream) cudaStreamDestroy(b->stream);
    free(b);
}

/* Grows the device arena (between passes only): new allocation, the bytes in
 * use copied over, the old one freed. An empty arena (the pipelines reserve
 * a run's whole plan before it starts) is freed first, so growing it never
 * holds both. */
static diffuse_status cu_arena_reserve(bk_backend *bk, size_t bytes) {
    cu_backend *b = cu_of(bk);
    if (bytes <= bk->arena_size) return DIFFUSE_OK;
    CU_ENTER(b);
    if (bytes > SIZE_MAX - CU_ALIGN)
        return cu_fail(bk, DIFFUSE_ERR_OUT_OF_MEMORY, "cuda backend: arena of %zu bytes is too large", bytes);
    const size_t size = (bytes + CU_ALIGN - 1) & ~(size_t)(CU_ALIGN - 1);
    if (bk->arena && !bk->arena_used) {
        CU_CUDA(bk, cudaStreamSynchronize(b->stream), "freeing the arena");
        cudaFree(bk->arena);
        cu_track(b, 0, bk->arena_size);
        bk->arena = NULL;
        bk->arena_size = 0;
    }
    void *mem = NULL;
    const cudaError_t e = cudaMalloc(&mem, size);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cu_fail(bk, DIFFUSE_ERR_OUT_OF_MEMORY,
                       "cuda backend: cannot allocate a device arena of %zu bytes (had %zu; weights hold %zu): %s",
                       size, bk->arena_size, b->weight_bytes, cudaGetErrorString(e));
    }
    if (bk->arena_used)
        CU_CUDA(bk, cudaMemcpyAsync(mem, bk->arena, bk->arena_used, cudaMemcpyDeviceToDevice, b->stream),
                "copying the arena");
    cu_track(b, size, 0);
    CU_CUDA(bk, cudaStreamSynchronize(b->stream), "growing the arena");
    if (bk->arena) cudaFree(bk->arena);
    cu_track(b, 0, bk->arena_size);
    bk->arena = (uint8_t *)mem;
    bk->arena_size = size;
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------- ops */

static diffuse_status cu_conv2d(bk_backend *bk, const bk_conv2d_args *a) {
    cu_backend *b = cu_of(bk);
    if (!a->in || !a->weight || !a->out || a->n <= 0 || a->c_in <= 0 || a->c_out <= 0 || a->kh <= 0 || a->kw <= 0 ||
        a->stride <= 0 || a->pad_top < 0 || a->pad_bottom < 0 || a->pad_left < 0 || a->pad_right < 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "conv2d: bad arguments");
    const int ho = (a->h + a->pad_top + a->pad_bottom - a->kh) / a->stride + 1;
    const int wo = (a->w + a->pad_left + a->pad_right - a->kw) / a->stride + 1;
    if (a->h + a->pad_top + a->pad_bottom < a->kh || a->w + a->pad_left + a->pad_right < a->kw)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "conv2d: kernel larger than the padded input");
    CU_ENTER(b);
    CU_DEV(b, a->weight, (size_t)a->c_out * a->c_in * a->kh * a->kw, w);
    CU_DEV(b, a->bias, a->c_out, bias);
    const int circ_y = a->circular_y && (a->pad_top || a->pad_bottom);
    const int circ_x = a->circular_x && (a->pad_left || a->pad_right);
    if ((circ_y && (a->pad_top > a->h || a->pad_bottom > a->h)) || (circ_x && (a->pad_left > a->w || a->pad_right > a->w)))
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "conv2d: circular padding larger than the %dx%d input", a->h,
                       a->w);
    if (a->pad_top != a->pad_bottom || a->pad_left != a->pad_right || circ_x || circ_y) {
        /* Not expressible in cuDNN's legacy API: the direct kernel. */
        const cuk_conv_params p = {a->in,     w,         bias,   a->out,       a->n,         a->c_in,
                                   a->h,      a->w,      a->c_out, a->kh,      a->kw,        a->stride,
                                   a->pad_top, a->pad_left, ho,   wo,           circ_x,       circ_y};
        CU_CUDA(bk, cuk_conv2d_direct(&p, b->stream), "conv2d (direct: asymmetric or circular padding)");
        return DIFFUSE_OK;
    }
    CU_DNN(bk, cudnnSetTensor4dDescriptor(b->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, a->n, a->c_in, a->h, a->w),
           "conv2d input descriptor");
    CU_DNN(bk, cudnnSetFilter4dDescriptor(b->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, a->c_out, a->c_in, a->kh, a->kw),
           "conv2d filter descriptor");
    CU_DNN(bk, cudnnSetConvolution2dDescriptor(b->cd, a->pad_top, a->pad_left, a->stride, a->stride, 1, 1,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
           "conv2d descriptor");
    CU_DNN(bk, cudnnSetConvolutionMathType(b->cd, CUDNN_FMA_MATH), "conv2d math type (no TF32)");
    CU_DNN(bk, cudnnSetTensor4dDescriptor(b->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, a->n, a->c_out, ho, wo),
           "conv2d output descriptor");
    cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    size_t ws_bytes = 0, avail = 0;
    CU_DNN(bk, cudnnGetConvolutionForwardWorkspaceSize(b->dnn, b->xd, b->wd, b->cd, b->yd, algo, &ws_bytes),
           "conv2d workspace size");
    void *ws = cu_scratch(b, ws_bytes, &avail);
    if (ws_bytes && !ws) {
        algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
        CU_DNN(bk, cudnnGetConvolutionForwardWorkspaceSize(b->dnn, b->xd, b->wd, b->cd, b->yd, algo, &ws_bytes),
               "conv2d workspace size");
        ws = cu_scratch(b, ws_bytes, &avail);
        if (ws_bytes && !ws)
            return cu_fail(bk, DIFFUSE_ERR_OUT_OF_MEMORY, "conv2d: cuDNN wants %zu bytes of workspace, the arena has %zu",
                           ws_bytes, avail);
    }
    const float one = 1.0f, zero = 0.0f;
    CU_DNN(bk, cudnnConvolutionForward(b->dnn, &one, b->xd, a->in, b->wd, w, b->cd, algo, ws, ws_bytes, &zero, b->yd,
                                       a->out),
           "cudnnConvolutionForward");
    if (bias) {
        const dk_bias_residual_params p = {a->out, bias, NULL, a->out, (size_t)a->n * a->c_out * ho * wo, ho * wo,
                                           a->c_out, DK_F32};
        CU_CUDA(bk, dk_bias_residual(&p, b->stream), "conv2d bias");
    }
    return DIFFUSE_OK;
}

static diffuse_status cu_linear(bk_backend *bk, const bk_linear_args *a) {
    cu_backend *b = cu_of(bk);
    if (!a->in || !a->weight || !a->out || a->m <= 0 || a->k <= 0 || a->n <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "linear: bad arguments (m=%d k=%d n=%d)", a->m, a->k, a->n);
    CU_ENTER(b);
    CU_DEV(b, a->weight, (size_t)a->n * a->k, w);
    CU_DEV(b, a->bias, a->n, bias);
    /* Row-major out (M, N) = in (M, K) W^T is column-major out^T (N, M) =
     * W (K x N col-major, transposed) in^T (K x M col-major). */
    const float one = 1.0f, zero = 0.0f;
    CU_BLAS(bk, cublasSgemm(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, a->n, a->m, a->k, &one, w, a->k, a->in, a->k, &zero,
                            a->out, a->n),
            "cublasSgemm (linear)");
    if (bias) {
        const dk_bias_residual_params p = {a->out, bias, NULL, a->out, (size_t)a->m * a->n, 1, a->n, DK_F32};
        CU_CUDA(bk, dk_bias_residual(&p, b->stream), "linear bias");
    }
    return DIFFUSE_OK;
}

static diffuse_status cu_group_norm(bk_backend *bk, const bk_group_norm_args *a) {
    cu_backend *b = cu_of(bk);
    if (!a->in || !a->out || !a->gamma || !a->beta || a->n <= 0 || a->c <= 0 || a->hw <= 0 || a->groups <= 0 ||
        a->c % a->groups)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "group_norm: bad arguments (c=%d groups=%d)", a->c,
                       a->groups);
    CU_ENTER(b);
    CU_DEV(b, a->gamma, a->c, g);
    CU_DEV(b, a->beta, a->c, be);
    const dk_group_norm_params p = {a->in, g, be, a->out, a->n, a->c, a->hw, a->groups, a->eps, a->fuse_silu, DK_F32};
    CU_CUDA(bk, dk_group_norm(&p, b->stream), "group_norm");
    return DIFFUSE_OK;
}

static diffuse_status cu_layer_norm(bk_backend *bk, const bk_layer_norm_args *a) {
    cu_backend *b = cu_of(bk);
    if (!a->in || !a->out || !a->gamma || !a->beta || a->m <= 0 || a->c <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "layer_norm: bad arguments");
    CU_ENTER(b);
    CU_DEV(b, a->gamma, a->c, g);
    CU_DEV(b, a->beta, a->c, be);
    const dk_layer_norm_params p = {a->in, g, be, a->out, a->m, a->c, a->eps, DK_F32};
    CU_CUDA(bk, dk_layer_norm(&p, b->stream), "layer_norm");
    return DIFFUSE_OK;
}

static diffuse_status cu_attention(bk_backend *bk, const bk_attention_args *a) {
    cu_backend *b = cu_of(bk);
    if (!a->q || !a->k || !a->v || !a->out || a->batch <= 0 || a->sq <= 0 || a->sk <= 0 || a->heads <= 0 ||
        a->head_dim <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "attention: bad arguments");
    CU_ENTER(b);
    const dk_attention_params p = {a->q,         a->k,     a->v,     a->out,       a->batch, a->sq,
                                   a->sk,        a->heads, a->head_dim, a->q_stride, a->kv_stride, 0,
                                   a->scale,     a->causal, DK_F32};
    CU_CUDA(bk, dk_attention(&p, b->stream), "attention");
    return DIFFUSE_OK;
}

static diffuse_status cu_timestep_embedding(bk_backend *bk, const bk_timestep_args *a) {
    cu_backend *b = cu_of(bk);
    if (!a->t || !a->out || a->n <= 0 || a->dim <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "timestep_embedding: bad arguments");
    CU_ENTER(b);
    size_t avail;
    float *t = cu_scratch(b, (size_t)a->n * sizeof(float), &avail);
    if (!t) return cu_fail(bk, DIFFUSE_ERR_OUT_OF_MEMORY, "timestep_embedding: no arena room for %d timesteps", a->n);
    CU_CUDA(bk, cudaMemcpyAsync(t, a->t, (size_t)a->n * sizeof(float), cudaMemcpyHostToDevice, b->stream),
            "timestep upload");
    const dk_timestep_params p = {t, a->out, a->n, a->dim, a->flip_sin_to_cos, a->downscale_freq_shift, a->scale,
                                  a->max_period};
    CU_CUDA(bk, dk_timestep_embedding(&p, b->stream), "timestep_embedding");
    return DIFFUSE_OK;
}

static diffuse_status cu_unary(bk_backend *bk, bk_unary f, const float *in, float *out, size_t n) {
    cu_backend *b = cu_of(bk);
    if (!in || !out || n == 0 || (unsigned)f > BK_UNARY_SILU)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "unary: bad arguments");
    CU_ENTER(b);
    CU_CUDA(bk, cuk_unary((int)f, in, out, n, b->stream), "unary");
    return DIFFUSE_OK;
}

static diffuse_status cu_geglu(bk_backend *bk, const float *in, float *out, int m, int d) {
    cu_backend *b = cu_of(bk);
    if (!in || !out || m <= 0 || d <= 0) return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "geglu: bad arguments");
    CU_ENTER(b);
    CU_CUDA(bk, dk_geglu(in, out, m, d, DK_F32, b->stream), "geglu");
    return DIFFUSE_OK;
}

static diffuse_status cu_upsample2x(bk_backend *bk, const float *in, float *out, int nc, int h, int w) {
    cu_backend *b = cu_of(bk);
    if (!in || !out || nc <= 0 || h <= 0 || w <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "upsample2x: bad arguments");
    CU_ENTER(b);
    CU_CUDA(bk, dk_upsample2x(in, out, nc, h, w, DK_F32, b->stream), "upsample2x");
    return DIFFUSE_OK;
}

static diffuse_status cu_concat(bk_backend *bk, const float *a, const float *bb, float *out, int n, int ca, int cb,
                                int hw) {
    cu_backend *b = cu_of(bk);
    if (!a || !bb || !out || n <= 0 || ca <= 0 || cb <= 0 || hw <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "concat: bad arguments");
    CU_ENTER(b);
    CU_CUDA(bk, dk_concat(a, bb, out, n, ca, cb, hw, DK_F32, b->stream), "concat");
    return DIFFUSE_OK;
}

static diffuse_status cu_add(bk_backend *bk, const float *a, const float *bb, float *out, size_t n) {
    cu_backend *b = cu_of(bk);
    if (!a || !bb || !out || n == 0) return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "add: bad arguments");
    CU_ENTER(b);
    CU_DEV(b, a, n, da);
    CU_DEV(b, bb, n, db);
    const dk_bias_residual_params p = {da, NULL, db, out, n, 1, 1, DK_F32};
    CU_CUDA(bk, dk_bias_residual(&p, b->stream), "add");
    return DIFFUSE_OK;
}

static diffuse_status cu_embedding(bk_backend *bk, const int32_t *ids, const float *table, int rows, const float *pos,
                                   float *out, int batch, int seq, int dim) {
    cu_backend *b = cu_of(bk);
    if (!ids || !table || !out || rows <= 0 || batch <= 0 || seq <= 0 || dim <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "embedding: bad arguments");
    const size_t count = (size_t)batch * seq;
    for (size_t i = 0; i < count; i++)
        if (ids[i] < 0 || ids[i] >= rows)
            return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "embedding: id %d at %zu outside [0, %d)", (int)ids[i], i,
                           rows);
    CU_ENTER(b);
    CU_DEV(b, table, (size_t)rows * dim, t);
    CU_DEV(b, pos, (size_t)seq * dim, p);
    size_t avail;
    int32_t *dids = cu_scratch(b, count * sizeof(int32_t), &avail);
    if (!dids) return cu_fail(bk, DIFFUSE_ERR_OUT_OF_MEMORY, "embedding: no arena room for %zu ids", count);
    CU_CUDA(bk, cudaMemcpyAsync(dids, ids, count * sizeof(int32_t), cudaMemcpyHostToDevice, b->stream), "ids upload");
    CU_CUDA(bk, cuk_embedding(dids, t, p, out, batch, seq, dim, b->stream), "embedding");
    return DIFFUSE_OK;
}

static diffuse_status cu_transpose(bk_backend *bk, const float *in, float *out, int n, int r, int k) {
    cu_backend *b = cu_of(bk);
    if (!in || !out || n <= 0 || r <= 0 || k <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "transpose: bad arguments");
    CU_ENTER(b);
    CU_CUDA(bk, cuk_transpose(in, out, n, r, k, b->stream), "transpose");
    return DIFFUSE_OK;
}

static diffuse_status cu_add_channel(bk_backend *bk, const float *in, const float *bias, float *out, int n, int c,
                                     int hw) {
    cu_backend *b = cu_of(bk);
    if (!in || !bias || !out || n <= 0 || c <= 0 || hw <= 0)
        return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "add_channel: bad arguments");
    CU_ENTER(b);
    CU_DEV(b, bias, (size_t)n * c, db);
    const dk_bias_residual_params p = {in, db, NULL, out, (size_t)n * c * hw, hw, n * c, DK_F32};
    CU_CUDA(bk, dk_bias_residual(&p, b->stream), "add_channel");
    return DIFFUSE_OK;
}

static diffuse_status cu_scale(bk_backend *bk, const float *in, float *out, size_t n, float s, float bias) {
    cu_backend *b = cu_of(bk);
    if (!in || !out || n == 0) return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "scale: bad arguments");
    CU_ENTER(b);
    CU_CUDA(bk, cuk_scale(in, out, n, s, bias, b->stream), "scale");
    return DIFFUSE_OK;
}

static diffuse_status cu_upload(bk_backend *bk, void *dst, const void *src, size_t bytes) {
    cu_backend *b = cu_of(bk);
    if (!dst || !src) return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "upload: NULL buffer");
    if (!bytes) return DIFFUSE_OK;
    CU_ENTER(b);
    /* From pageable memory the copy is staged before the call returns, so
     * the caller may reuse @src at once. */
    CU_CUDA(bk, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, b->stream), "upload");
    return DIFFUSE_OK;
}

static diffuse_status cu_download(bk_backend *bk, void *dst, const void *src, size_t bytes) {
    cu_backend *b = cu_of(bk);
    if (!dst || !src) return cu_fail(bk, DIFFUSE_ERR_INVALID_ARGUMENT, "download: NULL buffer");
    if (!bytes) return DIFFUSE_OK;
    CU_ENTER(b);
    CU_CUDA(bk, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, b->stream), "download");
    /* Errors of earlier asynchronous work surface here too. */
    CU_CUDA(bk, cudaStreamSynchronize(b->stream), "stream synchronize");
    return DIFFUSE_OK;
}

static const bk_ops cu_ops = {
    .name = CU_NAME,
    .destroy = cu_destroy,
    .arena_reserve = cu_arena_reserve,
    .conv2d = cu_conv2d,
    .linear = cu_linear,
    .group_norm = cu_group_norm,
    .layer_norm = cu_layer_norm,
    .attention = cu_attention,
    .timestep_embedding = cu_timestep_embedding,
    .unary = cu_unary,
    .geglu = cu_geglu,
    .upsample2x = cu_upsample2x,
    .concat = cu_concat,
    .add = cu_add,
    .embedding = cu_embedding,
    .transpose = cu_transpose,
    .add_channel = cu_add_channel,
    .scale = cu_scale,
    .upload = cu_upload,
    .download = cu_download,
};

/* -------------------------------------------------------- module entry */

static diffuse_status cu_setup(cu_backend *b) {
    bk_backend *bk = &b->base;
    CU_ENTER(b);
    CU_CUDA(bk, cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    CU_BLAS(bk, cublasCreate(&b->blas), "cublasCreate");
    CU_BLAS(bk, cublasSetStream(b->blas, b->stream), "cublasSetStream");
    /* Validation mode: plain fp32 FMA, no TF32 tensor cores. */
    CU_BLAS(bk, cublasSetMathMode(b->blas, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
    CU_DNN(bk, cudnnCreate(&b->dnn), "cudnnCreate");
    CU_DNN(bk, cudnnSetStream(b->dnn, b->stream), "cudnnSetStream");
    CU_DNN(bk, cudnnCreateTensorDescriptor(&b->xd), "cudnnCreateTensorDescriptor");
    CU_DNN(bk, cudnnCreateTensorDescriptor(&b->yd), "cudnnCreateTensorDescriptor");
    CU_DNN(bk, cudnnCreateFilterDescriptor(&b->wd), "cudnnCreateFilterDescriptor");
    CU_DNN(bk, cudnnCreateConvolutionDescriptor(&b->cd), "cudnnCreateConvolutionDescriptor");
    return DIFFUSE_OK;
}

static diffuse_status cu_create(int index, diffuse_precision precision, bk_backend **out, df_error *err) {
    *out = NULL;
    if (precision == DIFFUSE_PRECISION_F16 || precision == DIFFUSE_PRECISION_BF16) {
        err->status = DIFFUSE_ERR_UNSUPPORTED;
        snprintf(err->msg, sizeof err->msg,
                 "cuda backend: precision %s is not implemented yet (F32, the validation mode, is)",
                 precision == DIFFUSE_PRECISION_F16 ? "F16" : "BF16");
        return err->status;
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || index < 0 || index >= count) {
        (void)cudaGetLastError();
        err->status = DIFFUSE_ERR_NO_DEVICE;
        snprintf(err->msg, sizeof err->msg, "cuda backend: no CUDA device %d (%d found)", index, count);
        return err->status;
    }
    cu_backend *b = calloc(1, sizeof *b);
    if (!b) {
        err->status = DIFFUSE_ERR_OUT_OF_MEMORY;
        snprintf(err->msg, sizeof err->msg, "cuda backend: cannot allocate %zu bytes", sizeof *b);
        return err->status;
    }
    b->base.ops = &cu_ops;
    b->base.n_threads = 1;
    b->packing = SIZE_MAX;
    b->device = index;
    const diffuse_status st = cu_setup(b);
    if (st != DIFFUSE_OK) {
        *err = b->base.err;
        cu_destroy(&b->base);
        return st;
    }
    b->base.err.status = DIFFUSE_OK;
    b->base.err.msg[0] = '\0';
    *out = &b->base;
    return DIFFUSE_OK;
}

static int cu_count_devices(char *note, size_t n) {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(note, n, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return 0;
    }
    if (count <= 0) snprintf(note, n, "no CUDA device");
    return count;
}

static diffuse_status cu_device_info(int index, diffuse_device_info *info) {
    struct cudaDeviceProp prop;
    const cudaError_t e = cudaGetDeviceProperties(&prop, index);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(info->note, sizeof info->note, "cudaGetDeviceProperties(%d): %s", index, cudaGetErrorString(e));
        return DIFFUSE_ERR_NO_DEVICE;
    }
    snprintf(info->name, sizeof info->name, "%.*s", (int)sizeof info->name - 1, prop.name);
    info->memory_bytes = prop.totalGlobalMem;
    info->threads = 0;
    snprintf(info->note, sizeof info->note, "%s backend, compute capability %d.%d, float32 (no TF32)", CU_NAME,
             prop.major, prop.minor);
    return DIFFUSE_OK;
}

static const df_cuda_module cu_module = {
    .abi = DF_CUDA_MODULE_ABI,
    .backend_size = sizeof(bk_backend),
    .ops_size = sizeof(bk_ops),
    .error_size = sizeof(df_error),
    .name = CU_NAME,
    .count_devices = cu_count_devices,
    .device_info = cu_device_info,
    .create = cu_create,
};

__attribute__((visibility("default"))) const df_cuda_module *diffuse_cuda_backend_v2(void) { return &cu_module; }
