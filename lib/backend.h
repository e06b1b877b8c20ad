/*
 * backend.h - the op interface both backends (CPU reference, CUDA) implement.
 *
 * nets/ (UNet, VAE, CLIP) are written once against this table and never know
 * which backend runs them; a backend never knows which network it serves.
 * Tensors are plain contiguous row-major float32 buffers in the backend's
 * memory space (host memory for the CPU backend), described by the dims each
 * op takes. Image tensors are NCHW; sequences are [B, S, C].
 *
 * Memory: every backend instance owns one arena (bk_arena_*). A forward pass
 * takes all its activations and scratch from it with bk_alloc(), so nothing
 * is malloc'ed inside a pass; the arena is sized before the pass (by a
 * planning pass or an estimate) and reset between passes with marks.
 *
 * Every op returns a diffuse_status and writes a message into the backend's
 * error record on failure (e.g. the arena is too small for its scratch).
 */
#ifndef DIFFUSE_BACKEND_H
#define DIFFUSE_BACKEND_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bk_backend bk_backend;

/* conv2d: out[n, co, y, x] = bias[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] *
 * in[n, ci, y*stride - pad_top + ky, x*stride - pad_left + kx] (zero outside).
 * Hout = (H + pad_top + pad_bottom - KH) / stride + 1, likewise Wout. */
typedef struct bk_conv2d_args {
    const float *in;     /* (N, Cin, H, W) */
    const float *weight; /* (Cout, Cin, KH, KW) */
    const float *bias;   /* (Cout) or NULL */
    float *out;          /* (N, Cout, Hout, Wout) */
    int n, c_in, h, w;
    int c_out, kh, kw;
    int stride;
    int pad_top, pad_bottom, pad_left, pad_right;
    /* 1: the padding along x (columns) / y (rows) wraps around, as torch's
     * padding_mode="circular": in[.., y, x] outside the image reads
     * in[.., y mod H, x mod W]. Pads must not exceed the side. */
    int circular_x, circular_y;
} bk_conv2d_args;

/* linear: out[m, j] = bias[j] + sum_k in[m, k] * weight[j, k]
 * (PyTorch nn.Linear layout: weight is (out_features, in_features)). */
typedef struct bk_linear_args {
    const float *in;     /* (M, K) */
    const float *weight; /* (N, K) */
    const float *bias;   /* (N) or NULL */
    float *out;          /* (M, N) */
    int m, k, n;
} bk_linear_args;

/* group norm over (C/groups * HW) values per (n, group); statistics in
 * float64-accurate two-pass form; optional SiLU after the affine. */
typedef struct bk_group_norm_args {
    const float *in;    /* (N, C, HW) */
    const float *gamma; /* (C) */
    const float *beta;  /* (C) */
    float *out;         /* (N, C, HW); may equal in */
    int n, c, hw, groups;
    float eps;
    int fuse_silu;      /* 1: out = silu(norm(in)) */
} bk_group_norm_args;

/* layer norm over the last dim. */
typedef struct bk_layer_norm_args {
    const float *in;    /* (M, C) */
    const float *gamma; /* (C) */
    const float *beta;  /* (C) */
    float *out;         /* (M, C); may equal in */
    int m, c;
    float eps;
} bk_layer_norm_args;

/* multi-head attention: out = softmax(scale * q k^T [+ causal mask]) v per
 * (batch, head). Rows are strided so q, k, v can live inside one fused
 * projection: element (b, s, h, d) of q is q[(b*sq + s)*q_stride + h*head_dim + d].
 * Memory stays bounded for long sequences (online softmax over key tiles). */
typedef struct bk_attention_args {
    const float *q; /* (B, Sq, heads*head_dim) rows of q_stride floats */
    const float *k; /* (B, Sk, heads*head_dim) rows of kv_stride floats */
    const float *v; /* (B, Sk, heads*head_dim) rows of kv_stride floats */
    float *out;     /* (B, Sq, heads*head_dim), contiguous */
    int batch, sq, sk, heads, head_dim;
    int q_stride, kv_stride;
    float scale;    /* usually head_dim ** -0.5 */
    int causal;     /* 1: key j > query i masked (CLIP text) */
} bk_attention_args;

/* sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * half = dim/2, freq_i = exp(-ln(max_period) * i / (half - shift)),
 * arg = scale * t * freq_i; out = [sin(arg), cos(arg)] or, with
 * flip_sin_to_cos, [cos(arg), sin(arg)]; an odd dim is zero-padded. */
typedef struct bk_timestep_args {
    const float *t; /* (N) host memory: timesteps are scheduler state */
    float *out;     /* (N, dim) */
    int n, dim;
    int flip_sin_to_cos;
    float downscale_freq_shift;
    float scale;
    float max_period;
} bk_timestep_args;

typedef enum bk_unary {
    BK_UNARY_GELU = 0,       /* x * 0.5 * (1 + erf(x / sqrt 2)) */
    BK_UNARY_QUICK_GELU = 1, /* x * sigmoid(1.702 x) */
    BK_UNARY_SILU = 2        /* x * sigmoid(x) */
} bk_unary;

typedef struct bk_ops {
    const char *name;

    /* --- lifetime and memory ------------------------------------------ */
    void (*destroy)(bk_backend *bk);
    /* Makes the arena at least @bytes large. Only between passes: it may
     * move the arena, invalidating earlier bk_alloc pointers. */
    diffuse_status (*arena_reserve)(bk_backend *bk, size_t bytes);

    /* --- ops (all buffers in backend memory unless said) --------------- */
    diffuse_status (*conv2d)(bk_backend *bk, const bk_conv2d_args *a);
    diffuse_status (*linear)(bk_backend *bk, const bk_linear_args *a);
    diffuse_status (*group_norm)(bk_backend *bk, const bk_group_norm_args *a);
    diffuse_status (*layer_norm)(bk_backend *bk, const bk_layer_norm_args *a);
    diffuse_status (*attention)(bk_backend *bk, const bk_attention_args *a);
    diffuse_status (*timestep_embedding)(bk_backend *bk, const bk_timestep_args *a);
    /* out[i] = f(in[i]) for i < n; out may equal in. */
    diffuse_status (*unary)(bk_backend *bk, bk_unary f, const float *in, float *out, size_t n);
    /* GEGLU: in (M, 2D) = [h | gate] -> out (M, D) = h * gelu(gate). */
    diffuse_status (*geglu)(bk_backend *bk, const float *in, float *out, int m, int d);
    /* nearest-neighbour x2: (N*C, H, W) -> (N*C, 2H, 2W). */
    diffuse_status (*upsample2x)(bk_backend *bk, const float *in, float *out, int nc, int h, int w);
    /* channel concat: a (N, Ca, HW), b (N, Cb, HW) -> out (N, Ca+Cb, HW). */
    diffuse_status (*concat)(bk_backend *bk, const float *a, const float *b, float *out, int n, int ca,
                             int cb, int hw);
    /* out[i] = a[i] + b[i]; out may equal a or b. */
    diffuse_status (*add)(bk_backend *bk, const float *a, const float *b, float *out, size_t n);
    /* token + position embedding: out[b, s, :] = table[ids[b*seq + s], :] +
     * pos[s, :]. @ids is host memory, each id in [0, rows); pos may be NULL. */
    diffuse_status (*embedding)(bk_backend *bk, const int32_t *ids, const float *table, int rows,
                                const float *pos, float *out, int batch, int seq, int dim);
    /* batched transpose: in (N, R, K) -> out (N, K, R); turns NCHW feature
     * maps (R = C, K = HW) into token sequences (N, HW, C) and back. */
    diffuse_status (*transpose)(bk_backend *bk, const float *in, float *out, int n, int r, int k);
    /* out[n, c, p] = in[n, c, p] + bias[n * C + c]: a per-sample channel bias
     * (the time embedding added inside a resnet); out may equal in. */
    diffuse_status (*add_channel)(bk_backend *bk, const float *in, const float *bias, float *out, int n, int c,
                                  int hw);
    /* out[i] = in[i] * s + b; out may equal in. */
    diffuse_status (*scale)(bk_backend *bk, const float *in, float *out, size_t n, float s, float b);
    /* Host <-> backend copies (plain memcpy on the CPU). */
    diffuse_status (*upload)(bk_backend *bk, void *dst, const void *host_src, size_t bytes);
    diffuse_status (*download)(bk_backend *bk, void *host_dst, const void *src, size_t bytes);
} bk_ops;

/* Scratch any single op may take from the arena on top of its inputs and
 * outputs when it runs at full speed (conv2d's im2col band is the largest).
 * Workspace planners add this to the activations they need. */
#define BK_OP_SCRATCH_BYTES ((size_t)18 << 20)

/* The state every backend shares; a backend embeds it first in its own
 * struct. The arena is a bump allocator: bk_alloc takes from the top,
 * bk_mark/bk_release rewind. */
struct bk_backend {
    const bk_ops *ops;
    int n_threads;   /* CPU threads for this context (>= 1) */
    df_error err;    /* message of the last failed op */
    uint8_t *arena;  /* backend memory */
    size_t arena_size;
    size_t arena_used;
    size_t arena_peak;
    /* Set by a job for the length of its run (else NULL): networks check it
     * between blocks (nn_check_cancel) so a cancel lands inside long passes
     * such as the VAE decode, not only between sampler steps. */
    const _Atomic int *cancel;
    /* Seamless tiling (diffuse_generate_params tile_x / tile_y) for the
     * length of a run: the networks' padded convolutions wrap around. */
    int seamless_x, seamless_y;
    /* Device backends (0 on the CPU): device memory the backend holds now
     * (its arena and its copy of the weights, as allocated) and the most it
     * has held at once. Kept by the backend; read by diffuse_ctx_get_memory. */
    size_t device_bytes, device_peak;
};

/* Arena helpers (backend-independent bookkeeping). Allocations are 64-byte
 * aligned. bk_alloc returns NULL and records DIFFUSE_ERR_OUT_OF_MEMORY with
 * the sizes in bk->err when the arena is too small. */
void *bk_alloc(bk_backend *bk, size_t bytes);
static inline size_t bk_mark(const bk_backend *bk) { return bk->arena_used; }
static inline void bk_release(bk_backend *bk, size_t mark) { bk->arena_used = mark; }

/* CPU backend (lib/cpu/). @n_threads 0 = all cores. */
diffuse_status bk_cpu_create(int n_threads, bk_backend **out, df_error *err);

#endif /* DIFFUSE_BACKEND_H */
