/*
 * arena.c - the bump allocator every backend instance uses for activations
 * and scratch (see backend.h). Reserving happens between passes only.
 */
#include "backend.h"

#define BK_ALIGN 64

void *bk_alloc(bk_backend *bk, size_t bytes) {
    size_t start = (bk->arena_used + (BK_ALIGN - 1)) & ~(size_t)(BK_ALIGN - 1);
    size_t end;
    if (start < bk->arena_used || df_add_size(start, bytes, &end) || end > bk->arena_size) {
        df_fail(&bk->err, DIFFUSE_ERR_OUT_OF_MEMORY,
                "%s backend arena too small: need %zu more bytes at offset %zu, arena holds %zu",
                bk->ops->name, bytes, bk->arena_used, bk->arena_size);
        return NULL;
    }
    bk->arena_used = end;
    if (end > bk->arena_peak) bk->arena_peak = end;
    return bk->arena + start;
}
