/*
 * cpu_attention.c - multi-head attention on the CPU, tiled with an online
 * softmax so memory stays bounded for long sequences: per (batch, head) and
 * block of ATTN_BQ queries, key blocks of ATTN_BK are scored with one sgemm,
 * folded into a running max / running sum, and P.V accumulated with another
 * sgemm; up to ATTN_GROUP_MAX (batch, head) pairs take each step together.
 * Scratch is a few score tiles plus accumulators, never Sq x Sk.
 */
#include "cpu_internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* A 256 x 512 float score tile is 512 KiB: it stays in L2 while the row
 * softmax rewrites it and the P.V GEMM reads it back. */
#define ATTN_BQ 256 /* queries per block */
#define ATTN_BK 512 /* keys per block */
/* (batch, head) pairs whose tiles share one parallel softmax pass. Every
 * pass is a fork/join between GEMMs (which OpenBLAS threads on its own
 * pool), so fewer, larger passes waste less time waiting on stragglers:
 * with 8 heads at 4096 tokens this is 128 passes instead of 1024. */
#define ATTN_GROUP_MAX 8

/* Scratch for one query block of a group of G (batch, head) pairs, taken
 * from the arena once per op. Row r = g*qb + i is query i of pair g. */
typedef struct attn_tile {
    float *s;   /* (G, BQ, BK) scores, then probabilities; packed as (G*qb, kb) */
    float *acc; /* (G*BQ, D) unnormalised output */
    float *m;   /* (G*BQ) running max of the scores */
    double *l;  /* (G*BQ) running sum of exp(score - m) */
} attn_tile;

/* One (batch, head): strided row views and the contiguous output rows. */
typedef struct attn_head {
    const float *q, *k, *v; /* (Sq, D) rows of q_stride; (Sk, D) rows of kv_stride */
    float *out;             /* (Sq, D) rows of heads*D */
} attn_head;

static diffuse_status attn_check(bk_backend *bk, const bk_attention_args *a) {
    if (!a || !a->q || !a->k || !a->v || !a->out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "attention: NULL %s",
                       !a ? "args" : !a->q ? "q" : !a->k ? "k" : !a->v ? "v" : "output");
    if (a->batch <= 0 || a->sq <= 0 || a->sk <= 0 || a->heads <= 0 || a->head_dim <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "attention: dims must be positive (batch=%d sq=%d sk=%d heads=%d head_dim=%d)", a->batch,
                       a->sq, a->sk, a->heads, a->head_dim);
    const long long width = (long long)a->heads * a->head_dim;
    if (width > a->q_stride || width > a->kv_stride)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "attention: row strides q=%d kv=%d shorter than heads*head_dim=%lld", a->q_stride,
                       a->kv_stride, width);
    if (!isfinite(a->scale))
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "attention: scale %g is not finite",
                       (double)a->scale);
    return DIFFUSE_OK;
}

/* Views of pair @item = b*heads + h. */
static attn_head attn_head_at(const bk_attention_args *a, int item) {
    const int b = item / a->heads, d = a->head_dim;
    const size_t col = (size_t)(item % a->heads) * d;
    return (attn_head){
        .q = a->q + (size_t)b * a->sq * a->q_stride + col,
        .k = a->k + (size_t)b * a->sk * a->kv_stride + col,
        .v = a->v + (size_t)b * a->sk * a->kv_stride + col,
        .out = a->out + (size_t)b * a->sq * a->heads * d + col,
    };
}

/* Folds the scores t->s (rows, kb) of keys [j0, j0+kb) into the running
 * softmax of @rows = G*qb query rows (query i0 + r % qb): updates m and l,
 * rescales acc rows by exp(m_old - m_new), and overwrites s with
 * exp(s - m_new) (0 where masked). */
static void attn_softmax_tile(const bk_backend *bk, int causal, int i0, int j0, int rows, int qb, int kb, int d,
                              attn_tile *t) {
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)rows * kb > CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *s = t->s + (size_t)r * kb;
        int valid = kb; /* keys j0 + j <= i0 + i are visible under the causal mask */
        if (causal) {
            const int last = i0 + r % qb - j0 + 1;
            valid = last < 0 ? 0 : last < kb ? last : kb;
        }
        float mx = t->m[r];
        for (int j = 0; j < valid; j++) mx = fmaxf(mx, s[j]);
        if (mx == -INFINITY) { /* nothing visible yet: contributes nothing */
            memset(s, 0, (size_t)kb * sizeof *s);
            continue;
        }
        double sum = 0.0;
        for (int j = 0; j < valid; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        for (int j = valid; j < kb; j++) s[j] = 0.0f;
        const float corr = expf(t->m[r] - mx); /* 0 on the first visible tile */
        if (corr != 1.0f) {
            float *acc = t->acc + (size_t)r * d;
            for (int c = 0; c < d; c++) acc[c] *= corr;
        }
        t->l[r] = t->l[r] * corr + sum;
        t->m[r] = mx;
    }
}

/* Output rows [i0, i0+qb) of pairs [item0, item0+G) = acc / l. */
static void attn_write_rows(const bk_backend *bk, const bk_attention_args *a, int item0, int rows, int i0, int qb,
                            const attn_tile *t) {
    const int d = a->head_dim, width = a->heads * a->head_dim;
#pragma omp parallel for schedule(static) num_threads(bk->n_threads) if ((size_t)rows * d > CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const attn_head h = attn_head_at(a, item0 + r / qb);
        float *o = h.out + (size_t)(i0 + r % qb) * width;
        const float *acc = t->acc + (size_t)r * d;
        const float inv = (float)(1.0 / t->l[r]);
        for (int c = 0; c < d; c++) o[c] = acc[c] * inv;
    }
}

/* Queries [i0, i0+qb) of pairs [item0, item0+G) against all visible keys.
 * The GEMMs run here, outside any OpenMP region: OpenBLAS threads them. */
static void attn_query_block(const bk_backend *bk, const bk_attention_args *a, int item0, int G, int i0, int qb,
                             attn_tile *t) {
    const int d = a->head_dim, rows = G * qb;
    const int kend = a->causal && i0 + qb < a->sk ? i0 + qb : a->sk; /* later keys are all masked */
    for (int r = 0; r < rows; r++) {
        t->m[r] = -INFINITY;
        t->l[r] = 0.0;
    }
    memset(t->acc, 0, (size_t)rows * d * sizeof *t->acc);
    for (int j0 = 0; j0 < kend; j0 += ATTN_BK) {
        const int kb = kend - j0 < ATTN_BK ? kend - j0 : ATTN_BK;
        for (int g = 0; g < G; g++) { /* s_g (qb, kb) = scale * q (qb, D) x k (kb, D)^T */
            const attn_head h = attn_head_at(a, item0 + g);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, kb, d, a->scale,
                        h.q + (size_t)i0 * a->q_stride, a->q_stride, h.k + (size_t)j0 * a->kv_stride,
                        a->kv_stride, 0.0f, t->s + (size_t)g * qb * kb, kb);
        }
        attn_softmax_tile(bk, a->causal, i0, j0, rows, qb, kb, d, t);
        for (int g = 0; g < G; g++) { /* acc_g (qb, D) += p_g (qb, kb) x v (kb, D) */
            const attn_head h = attn_head_at(a, item0 + g);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qb, d, kb, 1.0f, t->s + (size_t)g * qb * kb,
                        kb, h.v + (size_t)j0 * a->kv_stride, a->kv_stride, 1.0f, t->acc + (size_t)g * qb * d, d);
        }
    }
    attn_write_rows(bk, a, item0, rows, i0, qb, t);
}

/* Takes the scratch for groups of up to ATTN_GROUP_MAX pairs, fewer when
 * the arena has less room (down to 1; then bk_alloc reports the shortfall).
 * Returns the group size, 0 on failure. */
static int attn_scratch(bk_backend *bk, int items, int bq, int bkeys, int d, attn_tile *t) {
    const size_t per_item = ((size_t)bq * bkeys + (size_t)bq * d + bq) * sizeof(float) + (size_t)bq * sizeof(double);
    size_t room = cpu_arena_free(bk);
    room = room > 4 * 64 ? room - 4 * 64 : 0; /* alignment of the four buffers */
    size_t G = room / per_item;
    if (G > ATTN_GROUP_MAX) G = ATTN_GROUP_MAX;
    if (G > (size_t)items) G = (size_t)items;
    if (G < 1) G = 1;
    t->s = bk_alloc(bk, G * bq * bkeys * sizeof *t->s);
    t->acc = t->s ? bk_alloc(bk, G * bq * d * sizeof *t->acc) : NULL;
    t->m = t->acc ? bk_alloc(bk, G * bq * sizeof *t->m) : NULL;
    t->l = t->m ? bk_alloc(bk, G * bq * sizeof *t->l) : NULL;
    return t->l ? (int)G : 0;
}

diffuse_status cpu_attention(bk_backend *bk, const bk_attention_args *a) {
    diffuse_status st = attn_check(bk, a);
    if (st != DIFFUSE_OK) return st;
    const int items = a->batch * a->heads; /* (batch, head) pairs */
    const int bq = a->sq < ATTN_BQ ? a->sq : ATTN_BQ, bkeys = a->sk < ATTN_BK ? a->sk : ATTN_BK;
    const size_t mark = bk_mark(bk);
    attn_tile t;
    const int group = attn_scratch(bk, items, bq, bkeys, a->head_dim, &t);
    if (!group) {
        bk_release(bk, mark);
        return df_fail_prefix(&bk->err, "attention scratch (%d x %d score tile): ", bq, bkeys);
    }
    for (int item0 = 0; item0 < items; item0 += group) {
        const int G = items - item0 < group ? items - item0 : group;
        for (int i0 = 0; i0 < a->sq; i0 += bq)
            attn_query_block(bk, a, item0, G, i0, a->sq - i0 < bq ? a->sq - i0 : bq, &t);
    }
    bk_release(bk, mark);
    return DIFFUSE_OK;
}
