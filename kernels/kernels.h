/*
 * kernels.h - launch interface of the hand-written CUDA kernels in kernels/.
 * Each kernel has a plain params struct (a comment on every field) and a
 * launcher taking params plus a stream; launchers return a cudaError_t as int.
 */
#ifndef DIFFUSE_KERNELS_H
#define DIFFUSE_KERNELS_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Group norm (+ SiLU) over NCHW fp32; one block per (n, group). */
typedef struct dk_group_norm_params {
    const float *in;    /* (N, C, HW) device memory */
    const float *gamma; /* (C) */
    const float *beta;  /* (C) */
    float *out;         /* (N, C, HW); may equal in */
    int n, c, hw;       /* dims */
    int groups;         /* C % groups == 0 */
    float eps;          /* added to the variance */
    int fuse_silu;      /* 1: out = silu(norm) */
} dk_group_norm_params;

int dk_group_norm(const dk_group_norm_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* DIFFUSE_KERNELS_H */
