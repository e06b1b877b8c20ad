/*
 * kernels.h - launch interface of the hand-written CUDA kernels in kernels/.
 * Each kernel has a plain params struct (a comment on every field) or a short
 * argument list, and a launcher taking them plus a stream; launchers return a
 * cudaError_t as int (cudaErrorInvalidValue for arguments they refuse).
 * All pointers are device memory. Math is fp32 whatever the storage type;
 * norm parameters (gamma, beta) are fp32.
 */
#ifndef DIFFUSE_KERNELS_H
#define DIFFUSE_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Storage type of activations. Values are fixed: they may be stored. */
typedef enum dk_dtype {
    DK_F32 = 0,
    DK_F16 = 1, /* IEEE binary16 (__half) */
    DK_BF16 = 2 /* bfloat16 (__nv_bfloat16) */
} dk_dtype;

/* Group norm (+ SiLU) over NCHW; one block per (n, group), fp32 two-pass
 * mean/variance over the group's C/groups * HW values. */
typedef struct dk_group_norm_params {
    const void *in;     /* (N, C, HW) of dtype */
    const float *gamma; /* (C) */
    const float *beta;  /* (C) */
    void *out;          /* (N, C, HW) of dtype; may equal in */
    int n, c, hw;       /* dims */
    int groups;         /* C % groups == 0 */
    float eps;          /* added to the variance */
    int fuse_silu;      /* 1: out = silu(norm) */
    dk_dtype dtype;     /* of in and out */
} dk_group_norm_params;

int dk_group_norm(const dk_group_norm_params *p, cudaStream_t stream);

/* Layer norm over the last dim; one warp per row, fp32 two-pass statistics. */
typedef struct dk_layer_norm_params {
    const void *in;     /* (M, C) of dtype */
    const float *gamma; /* (C) */
    const float *beta;  /* (C) */
    void *out;          /* (M, C) of dtype; may equal in */
    int m, c;           /* dims */
    float eps;          /* added to the variance */
    dk_dtype dtype;     /* of in and out */
} dk_layer_norm_params;

int dk_layer_norm(const dk_layer_norm_params *p, cudaStream_t stream);

/* Multi-head attention, out = softmax(scale * q k^T [+ causal mask]) v per
 * (batch, head), flash-style: per block of 64 queries, key tiles are scored
 * and folded into a running max / running sum; the score matrix never
 * reaches global memory. fp16/bf16 use tensor cores (mma.sync m16n8k16, fp32
 * accumulation, head dim padded to a multiple of 16 inside the kernel);
 * fp32 is a SIMT kernel for the fp32 validation mode. */
typedef struct dk_attention_params {
    const void *q;  /* element (b, s, h, d) at q[(b*sq + s)*q_stride + h*head_dim + d] */
    const void *k;  /* element (b, s, h, d) at k[(b*sk + s)*kv_stride + h*head_dim + d] */
    const void *v;  /* like k */
    void *out;      /* element (b, s, h, d) at out[(b*sq + s)*out_stride + h*head_dim + d] */
    int batch, sq, sk, heads;
    int head_dim;   /* 1..160 (SD uses 40, 64, 80, 160) */
    int q_stride, kv_stride; /* in elements; >= heads*head_dim */
    int out_stride; /* in elements; 0 means heads*head_dim */
    float scale;    /* usually head_dim ** -0.5 */
    int causal;     /* 1: key j > query i masked (CLIP text) */
    dk_dtype dtype; /* of q, k, v and out */
} dk_attention_params;

int dk_attention(const dk_attention_params *p, cudaStream_t stream);

/* One sampler step over the latents in one pass:
 *   m      = uncond + guidance * (cond - uncond)      (cond NULL: m = uncond)
 *   x_out  = a*x + b*m + c*noise + sum_j d[j]*hist[j]
 *   aux    = aux_a*x + aux_b*m                         (aux NULL: not written)
 * Every sampler of lib/sched is such a linear combination per step with
 * coefficients the host computes from the schedule (docs/cuda.md lists
 * them): Euler, Euler ancestral (c = sigma_up), DDIM/DDPM (c = eta noise),
 * Heun (each stage), DPM-Solver++ 2M (hist[0] = previous x0, aux = x0),
 * LMS and PNDM (hist = earlier derivatives / model outputs, aux = current
 * one), UniPC (predictor and corrector). v-prediction is linear in (x, m) too.
 * Guidance rescale (needs per-sample std) is not covered: it runs first. */
#define DK_SAMPLER_HIST 4
typedef struct dk_sampler_step_params {
    const float *x;            /* (n) latents */
    const void *uncond;        /* (n) model output, unconditional (or the only one), of model_dtype */
    const void *cond;          /* (n) conditional model output of model_dtype, or NULL (no CFG) */
    dk_dtype model_dtype;      /* of uncond and cond */
    float guidance;            /* CFG scale */
    const float *noise;        /* (n) or NULL */
    const float *hist[DK_SAMPLER_HIST]; /* (n) each, or NULL where its d is unused */
    float a, b, c;             /* coefficients of x, m, noise */
    float d[DK_SAMPLER_HIST];  /* coefficients of hist[j] */
    float *x_out;              /* (n); may equal x */
    float *aux;                /* (n) or NULL; may equal a hist[j] (read before written) */
    float aux_a, aux_b;        /* aux = aux_a*x + aux_b*m */
    size_t n;                  /* elements */
} dk_sampler_step_params;

int dk_sampler_step(const dk_sampler_step_params *p, cudaStream_t stream);

/* GEGLU: in (M, 2D) = [h | gate] -> out (M, D) = h * gelu(gate), exact (erf) GELU. */
int dk_geglu(const void *in, void *out, int m, int d, dk_dtype dtype, cudaStream_t stream);

/* out[i] = in[i] + bias[(i / inner) % nbias] + residual[i], i < n; bias and
 * residual may be NULL. inner = 1, nbias = N: a row bias on (M, N) tokens;
 * inner = HW, nbias = C: a channel bias on NCHW; nbias = N*C: a per-sample
 * channel bias (the time embedding in a resnet). out may equal in or residual. */
typedef struct dk_bias_residual_params {
    const void *in;       /* (n) of dtype */
    const void *bias;     /* (nbias) of dtype, or NULL */
    const void *residual; /* (n) of dtype, or NULL */
    void *out;            /* (n) of dtype */
    size_t n;             /* elements */
    int inner;            /* elements sharing one bias value (>= 1) */
    int nbias;            /* bias length (>= 1) */
    dk_dtype dtype;       /* of every tensor */
} dk_bias_residual_params;

int dk_bias_residual(const dk_bias_residual_params *p, cudaStream_t stream);

/* Nearest-neighbour x2: (NC, H, W) -> (NC, 2H, 2W). */
int dk_upsample2x(const void *in, void *out, int nc, int h, int w, dk_dtype dtype, cudaStream_t stream);

/* Channel concat: a (N, Ca, HW), b (N, Cb, HW) -> out (N, Ca+Cb, HW). */
int dk_concat(const void *a, const void *b, void *out, int n, int ca, int cb, int hw, dk_dtype dtype,
              cudaStream_t stream);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding (and the
 * CPU backend): half = dim/2, freq_i = exp(-ln(max_period) * i / (half - shift)),
 * arg = scale * t * freq_i, out = [sin | cos] (flip: [cos | sin]), odd dim
 * zero-padded; fp32 with the CPU backend's float32 rounding of the argument. */
typedef struct dk_timestep_params {
    const float *t;        /* (N) device memory (a CUDA graph replays with new values) */
    float *out;            /* (N, dim) */
    int n, dim;
    int flip_sin_to_cos;
    float downscale_freq_shift;
    float scale;
    float max_period;
} dk_timestep_params;

int dk_timestep_embedding(const dk_timestep_params *p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* DIFFUSE_KERNELS_H */
