/*
 * cpu_embedding.c - token + position embedding lookup on the CPU: gathers
 * one table row per token id and adds the position row. Ids are checked
 * against the table size first, so a bad id is an error, not a wild read.
 */
#include "cpu_internal.h"

#include <string.h>

diffuse_status cpu_embedding(bk_backend *bk, const int32_t *ids, const float *table, int rows, const float *pos,
                             float *out, int batch, int seq, int dim) {
    if (!ids || !table || !out || rows <= 0 || batch <= 0 || seq <= 0 || dim <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "embedding: NULL buffer or non-positive dims (rows=%d batch=%d seq=%d dim=%d)", rows, batch,
                       seq, dim);
    const size_t n = (size_t)batch * seq;
    for (size_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= rows)
            return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "embedding: token id %d at %zu outside [0, %d)",
                           (int)ids[t], t, rows);
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if (n * (size_t)dim > CPU_PAR_MIN)
    for (size_t t = 0; t < n; t++) {
        const float *row = table + (size_t)ids[t] * dim;
        const float *p = pos ? pos + (t % (size_t)seq) * dim : NULL;
        float *o = out + t * dim;
        if (p)
            for (int c = 0; c < dim; c++) o[c] = row[c] + p[c];
        else
            memcpy(o, row, (size_t)dim * sizeof *o);
    }
    return DIFFUSE_OK;
}
