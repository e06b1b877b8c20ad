/*
 * shims.c - host implementations of the cuBLAS and cuDNN calls the CUDA
 * backend makes (cublas_v2.h, cudnn.h here), for the emulated module: device
 * memory is host memory under the SIMT emulator, so a GEMM is cblas_sgemm
 * (column-major, as cuBLAS) and a convolution is im2col + cblas_sgemm. Every
 * call checks its arguments the way the library does and returns a status
 * instead of crashing, so the backend's error paths are exercised too.
 */
#include "cublas_v2.h"
#include "cudnn.h"

#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ cuBLAS */

struct cublasContext {
    cudaStream_t stream;
    cublasMath_t math;
};

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = calloc(1, sizeof **handle);
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)mode > CUBLAS_TF32_TENSOR_OP_MATH) return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

static enum CBLAS_TRANSPOSE cblas_op(cublasOperation_t op) { return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                           const float *beta, float *C, int ldc) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)transa > CUBLAS_OP_C || (unsigned)transb > CUBLAS_OP_C || m < 0 || n < 0 || k < 0 || !alpha ||
        !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    /* cuBLAS's leading-dimension rules (column-major). */
    const int rows_a = transa == CUBLAS_OP_N ? m : k, rows_b = transb == CUBLAS_OP_N ? k : n;
    if (lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (!C || (k > 0 && (!A || !B))) return CUBLAS_STATUS_INVALID_VALUE;
    cblas_sgemm(CblasColMajor, cblas_op(transa), cblas_op(transb), m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

/* ------------------------------------------------------------------- cuDNN */

struct cudnnContext {
    cudaStream_t stream;
};
struct cudnnTensorStruct {
    int set, n, c, h, w;
};
struct cudnnFilterStruct {
    int set, k, c, h, w;
};
struct cudnnConvolutionStruct {
    int set, pad_h, pad_w, u, v;
    cudnnMathType_t math;
};

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM;
    *handle = calloc(1, sizeof **handle);
    return *handle ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    free(handle);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUDNN_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}
const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}

#define SHIM_CREATE(fn, type)                                                                                          \
    cudnnStatus_t fn(type *d) {                                                                                        \
        if (!d) return CUDNN_STATUS_BAD_PARAM;                                                                         \
        *d = calloc(1, sizeof **d);                                                                                    \
        return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;                                                  \
    }
SHIM_CREATE(cudnnCreateTensorDescriptor, cudnnTensorDescriptor_t)
SHIM_CREATE(cudnnCreateFilterDescriptor, cudnnFilterDescriptor_t)
SHIM_CREATE(cudnnCreateConvolutionDescriptor, cudnnConvolutionDescriptor_t)
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    free(d);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    free(d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
    if (!d || n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    *d = (struct cudnnTensorStruct){1, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
    if (!d || k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    *d = (struct cudnnFilterStruct){1, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type) {
    if (!d || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
        return CUDNN_STATUS_BAD_PARAM;
    if (dilation_h != 1 || dilation_w != 1 || mode != CUDNN_CROSS_CORRELATION || compute_type != CUDNN_DATA_FLOAT)
        return CUDNN_STATUS_NOT_SUPPORTED;
    const cudnnMathType_t math = d->math;
    *d = (struct cudnnConvolutionStruct){1, pad_h, pad_w, u, v, math};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
    if (!d || (unsigned)math > CUDNN_FMA_MATH) return CUDNN_STATUS_BAD_PARAM;
    d->math = math;
    return CUDNN_STATUS_SUCCESS;
}

/* Checks the four descriptors agree; *@cols = Cin*KH*KW, *@pix = Hout*Wout. */
static cudnnStatus_t conv_check(const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                                const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t y, size_t *cols,
                                size_t *pix) {
    if (!x || !w || !c || !y || !x->set || !w->set || !c->set || !y->set) return CUDNN_STATUS_BAD_PARAM;
    const int ho = (x->h + 2 * c->pad_h - w->h) / c->u + 1, wo = (x->w + 2 * c->pad_w - w->w) / c->v + 1;
    if (x->c != w->c || y->n != x->n || y->c != w->k || ho <= 0 || wo <= 0 || y->h != ho || y->w != wo)
        return CUDNN_STATUS_BAD_PARAM;
    *cols = (size_t)w->c * w->h * w->w;
    *pix = (size_t)ho * wo;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t conv,
                                                      const cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes) {
    size_t cols, pix;
    if (!handle || !bytes) return CUDNN_STATUS_BAD_PARAM;
    const cudnnStatus_t st = conv_check(x, w, conv, y, &cols, &pix);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM) *bytes = 0;
    else if (algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM) *bytes = cols * pix * sizeof(float);
    else return CUDNN_STATUS_NOT_SUPPORTED;
    return CUDNN_STATUS_SUCCESS;
}

/* Column matrix of one sample: col[(ci*KH + ky)*KW + kx][p] for output pixel p. */
static void im2col(const float *src, float *col, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                   const cudnnConvolutionDescriptor_t c, int ho, int wo) {
    for (int ci = 0; ci < x->c; ci++)
        for (int ky = 0; ky < w->h; ky++)
            for (int kx = 0; kx < w->w; kx++) {
                float *dst = col + ((size_t)(ci * w->h + ky) * w->w + kx) * ho * wo;
                const float *plane = src + (size_t)ci * x->h * x->w;
                for (int oy = 0; oy < ho; oy++) {
                    const int iy = oy * c->u - c->pad_h + ky;
                    for (int ox = 0; ox < wo; ox++) {
                        const int ix = ox * c->v - c->pad_w + kx;
                        dst[(size_t)oy * wo + ox] =
                            iy >= 0 && iy < x->h && ix >= 0 && ix < x->w ? plane[(size_t)iy * x->w + ix] : 0.0f;
                    }
                }
            }
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xd,
                                      const void *x, const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t algo,
                                      void *workspace, size_t workspace_bytes, const void *beta,
                                      const cudnnTensorDescriptor_t yd, void *y) {
    size_t cols, pix, need;
    if (!handle || !alpha || !beta || !x || !w || !y) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t st = conv_check(xd, wd, cd, yd, &cols, &pix);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnGetConvolutionForwardWorkspaceSize(handle, xd, wd, cd, yd, algo, &need);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (workspace_bytes < need || (need && !workspace)) return CUDNN_STATUS_BAD_PARAM;
    float *col = algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ? (float *)workspace
                                                                          : malloc(cols * pix * sizeof(float));
    if (!col) return CUDNN_STATUS_ALLOC_FAILED;
    const float a = *(const float *)alpha, b = *(const float *)beta;
    for (int n = 0; n < xd->n; n++) {
        im2col((const float *)x + (size_t)n * xd->c * xd->h * xd->w, col, xd, wd, cd, yd->h, yd->w);
        /* y_n (K, P) = a * W (K, cols) col (cols, P) + b * y_n, row-major. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, wd->k, (int)pix, (int)cols, a, (const float *)w,
                    (int)cols, col, (int)pix, b, (float *)y + (size_t)n * wd->k * pix, (int)pix);
    }
    if (col != workspace) free(col);
    return CUDNN_STATUS_SUCCESS;
}
