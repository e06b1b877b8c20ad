/*
 * cpu_backend.c - the CPU backend instance: creation, its arena in host
 * memory, and the op table. The CPU backend is the numerical reference the
 * CUDA backend is checked against; the ops live in the other cpu_*.c files.
 *
 * GEMMs go to OpenBLAS (pthread build), which keeps its own thread pool:
 * ops call cblas_sgemm only outside OpenMP parallel regions.
 */
#include "cpu_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define CPU_ARENA_ALIGN 64

static void cpu_destroy(bk_backend *bk) {
    if (!bk) return;
    free(bk->arena);
    free(bk);
}

/* Grows the arena to at least @bytes (rounded up to 64). The bytes in use
 * are copied over, so marks stay meaningful, but pointers into the old
 * arena are invalid afterwards: call only between passes. */
static diffuse_status cpu_arena_reserve(bk_backend *bk, size_t bytes) {
    if (!bk) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (bytes <= bk->arena_size) return DIFFUSE_OK;
    size_t size;
    if (df_add_size(bytes, CPU_ARENA_ALIGN - 1, &size))
        return df_fail(&bk->err, DIFFUSE_ERR_OUT_OF_MEMORY, "cpu backend: arena of %zu bytes is too large",
                       bytes);
    size &= ~(size_t)(CPU_ARENA_ALIGN - 1);
    void *mem = NULL;
    if (posix_memalign(&mem, CPU_ARENA_ALIGN, size) != 0 || !mem)
        return df_fail(&bk->err, DIFFUSE_ERR_OUT_OF_MEMORY,
                       "cpu backend: cannot allocate an arena of %zu bytes (had %zu)", size, bk->arena_size);
    if (bk->arena_used) memcpy(mem, bk->arena, bk->arena_used);
    free(bk->arena);
    bk->arena = mem;
    bk->arena_size = size;
    return DIFFUSE_OK;
}

static const bk_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .arena_reserve = cpu_arena_reserve,
    .conv2d = cpu_conv2d,
    .linear = cpu_linear,
    .group_norm = cpu_group_norm,
    .layer_norm = cpu_layer_norm,
    .attention = cpu_attention,
    .timestep_embedding = cpu_timestep_embedding,
    .unary = cpu_unary,
    .geglu = cpu_geglu,
    .upsample2x = cpu_upsample2x,
    .concat = cpu_concat,
    .add = cpu_add,
    .embedding = cpu_embedding,
    .transpose = cpu_transpose,
    .add_channel = cpu_add_channel,
    .scale = cpu_scale,
    .upload = cpu_copy,
    .download = cpu_copy,
};

diffuse_status bk_cpu_create(int n_threads, bk_backend **out, df_error *err) {
    if (!out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "bk_cpu_create: out is NULL");
    *out = NULL;
    bk_backend *bk = calloc(1, sizeof *bk);
    if (!bk)
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "bk_cpu_create: cannot allocate %zu bytes",
                       sizeof *bk);
    bk->ops = &cpu_ops;
    bk->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    if (bk->n_threads < 1) bk->n_threads = 1;
    df_error_clear(&bk->err);
    *out = bk;
    return DIFFUSE_OK;
}
