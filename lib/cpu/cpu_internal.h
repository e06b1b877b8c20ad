/*
 * cpu_internal.h - what the CPU backend's files share: the op entry points
 * that the op table in cpu_backend.c points at, and small helpers for
 * parallel loops and scratch sizing. Only lib/cpu/ includes it.
 */
#ifndef DIFFUSE_CPU_INTERNAL_H
#define DIFFUSE_CPU_INTERNAL_H

#include "backend.h"

#include <stddef.h>

/* Loops over fewer elements than this stay on one thread: forking costs
 * more than the work. */
#define CPU_PAR_MIN 16384

/* Bytes bk_alloc can still hand out right now (arena allocations are
 * 64-byte aligned, see arena.c). */
static inline size_t cpu_arena_free(const bk_backend *bk) {
    size_t start = (bk->arena_used + 63) & ~(size_t)63;
    return start >= bk->arena_size ? 0 : bk->arena_size - start;
}

/* --- ops (cpu_conv.c, cpu_linear.c, cpu_norm.c, cpu_attention.c,
 *          cpu_timestep.c, cpu_elementwise.c, cpu_layout.c) ------------- */
diffuse_status cpu_conv2d(bk_backend *bk, const bk_conv2d_args *a);
diffuse_status cpu_linear(bk_backend *bk, const bk_linear_args *a);
diffuse_status cpu_group_norm(bk_backend *bk, const bk_group_norm_args *a);
diffuse_status cpu_layer_norm(bk_backend *bk, const bk_layer_norm_args *a);
diffuse_status cpu_attention(bk_backend *bk, const bk_attention_args *a);
diffuse_status cpu_timestep_embedding(bk_backend *bk, const bk_timestep_args *a);
diffuse_status cpu_unary(bk_backend *bk, bk_unary f, const float *in, float *out, size_t n);
diffuse_status cpu_geglu(bk_backend *bk, const float *in, float *out, int m, int d);
diffuse_status cpu_add(bk_backend *bk, const float *a, const float *b, float *out, size_t n);
diffuse_status cpu_upsample2x(bk_backend *bk, const float *in, float *out, int nc, int h, int w);
diffuse_status cpu_concat(bk_backend *bk, const float *a, const float *b, float *out, int n, int ca,
                          int cb, int hw);
diffuse_status cpu_embedding(bk_backend *bk, const int32_t *ids, const float *table, int rows, const float *pos,
                             float *out, int batch, int seq, int dim);
diffuse_status cpu_transpose(bk_backend *bk, const float *in, float *out, int n, int r, int k);
diffuse_status cpu_add_channel(bk_backend *bk, const float *in, const float *bias, float *out, int n, int c,
                               int hw);
diffuse_status cpu_scale(bk_backend *bk, const float *in, float *out, size_t n, float s, float b);
diffuse_status cpu_copy(bk_backend *bk, void *dst, const void *src, size_t bytes);

#endif /* DIFFUSE_CPU_INTERNAL_H */
