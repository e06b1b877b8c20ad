/*
 * test_ops.c - checks every CPU backend op against a float64 reference
 * written plainly in this file, on fresh seeded random inputs, with the
 * outputs poisoned (NaN, plus a NaN guard zone past the end) before each
 * call. Metric: max|out - ref| / max|ref| <= 1e-5 for every op.
 *
 * Also checks argument validation, that ops release their arena scratch,
 * that conv2d runs in bounded bands and reports a too-small arena, and that
 * attention at 4096 tokens uses far less than a 4096 x 4096 score matrix.
 * Prints one line per check; exits non-zero on any failure.
 */
#include "backend.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOL 1e-5
#define GUARD 16 /* NaN floats after every output that must stay NaN */
#define ARENA_BYTES ((size_t)32 << 20)

static int g_failed, g_passed;

/* ------------------------------------------------------------------------ */
/* Random inputs, poisoned outputs, the error metric                         */
/* ------------------------------------------------------------------------ */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

/* splitmix64 -> uniform [0, 1) with 53 bits. */
static double rng_u01(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "test_ops: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

/* n floats uniform in [lo, hi). */
static float *rand_buf(size_t n, double lo, double hi) {
    float *p = xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * rng_u01());
    return p;
}

/* n floats of output plus GUARD, all NaN. */
static float *poisoned(size_t n) {
    float *p = xmalloc((n + GUARD) * sizeof *p);
    for (size_t i = 0; i < n + GUARD; i++) p[i] = NAN;
    return p;
}

/* max|out - ref| / max|ref|; infinite when an output is not finite. */
static double rel_err(const float *out, const double *ref, size_t n) {
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) return INFINITY;
        const double d = fabs((double)out[i] - ref[i]);
        if (d > max_diff) max_diff = d;
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
    }
    return max_ref > 0.0 ? max_diff / max_ref : max_diff;
}

/* Largest error seen per op, for the summary. */
#define MAX_OPS 24
static struct {
    const char *op;
    double err;
} g_worst[MAX_OPS];

static void note_worst(const char *op, double err) {
    for (int i = 0; i < MAX_OPS; i++) {
        if (!g_worst[i].op) g_worst[i].op = op;
        if (strcmp(g_worst[i].op, op) == 0) {
            if (err > g_worst[i].err) g_worst[i].err = err;
            return;
        }
    }
}

static void pass(const char *what, double err) {
    printf("PASS %s relerr=%.1e\n", what, err);
    g_passed++;
}

static void fail(const char *what, const char *why) {
    printf("FAIL %s: %s\n", what, why);
    g_failed++;
}

/* Judges one op call: status, scratch released, guard zone, error. */
static void check(bk_backend *bk, const char *op, const char *what, diffuse_status st, size_t mark,
                  const float *out, const double *ref, size_t n, double tol) {
    char why[DF_ERR_MSG_MAX + 64];
    if (st != DIFFUSE_OK) {
        snprintf(why, sizeof why, "status %d: %s", (int)st, bk->err.msg);
        fail(what, why);
        return;
    }
    if (bk->arena_used != mark) {
        snprintf(why, sizeof why, "arena scratch not released (%zu bytes left)", bk->arena_used - mark);
        fail(what, why);
        return;
    }
    for (size_t i = n; i < n + GUARD; i++)
        if (!isnan(out[i])) {
            fail(what, "wrote past the end of its output");
            return;
        }
    const double err = rel_err(out, ref, n);
    note_worst(op, err);
    if (!(err <= tol)) {
        snprintf(why, sizeof why, "relerr=%.3e > %.0e", err, tol);
        fail(what, why);
        return;
    }
    pass(what, err);
}

/* ------------------------------------------------------------------------ */
/* conv2d                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct conv_case {
    int n, c_in, h, w, c_out, k, stride;
    int pad[4]; /* top, bottom, left, right */
    int bias;
    int circ; /* bit 0: circular along x, bit 1: along y */
} conv_case;

static void ref_conv2d(const bk_conv2d_args *a, int ho, int wo, double *ref) {
    for (int n = 0; n < a->n; n++)
        for (int co = 0; co < a->c_out; co++)
            for (int y = 0; y < ho; y++)
                for (int x = 0; x < wo; x++) {
                    double s = a->bias ? a->bias[co] : 0.0;
                    for (int ci = 0; ci < a->c_in; ci++)
                        for (int ky = 0; ky < a->kh; ky++)
                            for (int kx = 0; kx < a->kw; kx++) {
                                int iy = y * a->stride - a->pad_top + ky;
                                int ix = x * a->stride - a->pad_left + kx;
                                if (a->circular_y) iy = (iy % a->h + a->h) % a->h;
                                if (a->circular_x) ix = (ix % a->w + a->w) % a->w;
                                if (iy < 0 || iy >= a->h || ix < 0 || ix >= a->w) continue;
                                s += (double)a->weight[((co * a->c_in + ci) * a->kh + ky) * a->kw + kx] *
                                     a->in[((size_t)(n * a->c_in + ci) * a->h + iy) * a->w + ix];
                            }
                    ref[((size_t)(n * a->c_out + co) * ho + y) * wo + x] = s;
                }
}

/* Runs one conv case; @leave_free > 0 first fills the arena so only that
 * many bytes remain, which forces im2col into several bands. Returns the
 * arena bytes the op took at its peak. */
static size_t test_conv2d(bk_backend *bk, const conv_case *c, size_t leave_free, const char *note) {
    bk_conv2d_args a = {.n = c->n, .c_in = c->c_in, .h = c->h, .w = c->w, .c_out = c->c_out, .kh = c->k,
                        .kw = c->k, .stride = c->stride, .pad_top = c->pad[0], .pad_bottom = c->pad[1],
                        .pad_left = c->pad[2], .pad_right = c->pad[3], .circular_x = c->circ & 1,
                        .circular_y = (c->circ >> 1) & 1};
    const int ho = (c->h + c->pad[0] + c->pad[1] - c->k) / c->stride + 1;
    const int wo = (c->w + c->pad[2] + c->pad[3] - c->k) / c->stride + 1;
    const size_t n_out = (size_t)c->n * c->c_out * ho * wo;
    float *in = rand_buf((size_t)c->n * c->c_in * c->h * c->w, -1, 1);
    float *w = rand_buf((size_t)c->c_out * c->c_in * c->k * c->k, -1, 1);
    float *bias = c->bias ? rand_buf((size_t)c->c_out, -1, 1) : NULL;
    float *out = poisoned(n_out);
    double *ref = xmalloc(n_out * sizeof *ref);
    a.in = in, a.weight = w, a.bias = bias, a.out = out;
    ref_conv2d(&a, ho, wo, ref);

    const size_t outer = bk_mark(bk);
    if (leave_free) bk_alloc(bk, bk->arena_size - outer - leave_free - 64);
    const size_t mark = bk_mark(bk);
    bk->arena_peak = mark;
    const diffuse_status st = bk->ops->conv2d(bk, &a);
    const size_t peak = bk->arena_peak - mark;
    char what[200];
    snprintf(what, sizeof what, "conv2d %dx%d s%d pad(%d,%d,%d,%d)%s %s n=%d cin=%d cout=%d %dx%d%s", c->k, c->k,
             c->stride, c->pad[0], c->pad[1], c->pad[2], c->pad[3],
             c->circ == 3 ? " circular" : c->circ == 1 ? " circular-x" : c->circ == 2 ? " circular-y" : "",
             c->bias ? "bias" : "nobias", c->n, c->c_in, c->c_out, c->h, c->w, note);
    check(bk, "conv2d", what, st, mark, out, ref, n_out, TOL);
    bk_release(bk, outer);
    free(in), free(w), free(bias), free(out), free(ref);
    return peak;
}

static void test_conv2d_all(bk_backend *bk) {
    static const conv_case cases[] = {
        {2, 3, 7, 9, 5, 3, 1, {1, 1, 1, 1}, 1, 0},   {1, 64, 9, 7, 32, 3, 1, {1, 1, 1, 1}, 1, 0},
        {1, 3, 7, 9, 4, 3, 1, {0, 0, 0, 0}, 0, 0},   {2, 3, 7, 9, 4, 3, 2, {1, 1, 1, 1}, 1, 0},
        {1, 64, 9, 11, 16, 3, 2, {1, 1, 1, 1}, 0, 0}, {2, 3, 7, 9, 5, 3, 2, {0, 1, 0, 1}, 1, 0},
        {1, 64, 8, 8, 32, 3, 2, {0, 1, 0, 1}, 1, 0}, {2, 64, 7, 9, 16, 1, 1, {0, 0, 0, 0}, 1, 0},
        {1, 64, 7, 9, 16, 1, 1, {0, 0, 0, 0}, 0, 0}, {2, 3, 7, 9, 5, 1, 1, {0, 0, 0, 0}, 1, 0},
        {1, 5, 7, 9, 3, 1, 2, {0, 0, 0, 0}, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_conv2d(bk, &cases[i], 0, "");
    /* one output row of im2col is 16*9*31*4 = 17856 bytes: room for 3 rows -> 11 bands */
    static const conv_case banded = {2, 16, 33, 31, 8, 3, 1, {1, 1, 1, 1}, 1, 0};
    test_conv2d(bk, &banded, 3 * 17856 + 100, " (3-row bands)");
    static const conv_case banded_s2 = {1, 16, 33, 31, 8, 3, 2, {0, 1, 0, 1}, 1, 0};
    test_conv2d(bk, &banded_s2, 2 * 16 * 9 * 16 * 4, " (2-row bands)");
    /* circular padding (seamless tiling): both axes, one axis, stride 2, banded */
    static const conv_case circ[] = {
        {2, 3, 7, 9, 5, 3, 1, {1, 1, 1, 1}, 1, 3}, {1, 64, 9, 7, 32, 3, 1, {1, 1, 1, 1}, 0, 1},
        {1, 5, 7, 9, 4, 3, 1, {1, 1, 1, 1}, 1, 2}, {2, 3, 8, 10, 4, 3, 2, {1, 1, 1, 1}, 1, 3},
        {1, 4, 6, 5, 3, 5, 1, {2, 2, 2, 2}, 1, 3},
    };
    for (size_t i = 0; i < sizeof circ / sizeof circ[0]; i++) test_conv2d(bk, &circ[i], 0, "");
    static const conv_case circ_banded = {2, 16, 33, 31, 8, 3, 1, {1, 1, 1, 1}, 1, 3};
    test_conv2d(bk, &circ_banded, 3 * 17856 + 100, " (3-row bands)");
    /* the whole im2col would be 1152 taps x 4096 columns = 18 MiB: capped at 16 MiB */
    static const conv_case big = {1, 128, 64, 64, 8, 3, 1, {1, 1, 1, 1}, 1, 0};
    const size_t peak = test_conv2d(bk, &big, 0, "");
    char what[128];
    snprintf(what, sizeof what, "conv2d im2col scratch %zu KiB <= 16384 KiB (full im2col %zu KiB)", peak >> 10,
             ((size_t)1152 * 4096 * 4) >> 10);
    if (peak > 0 && peak <= ((size_t)16 << 20)) {
        printf("PASS %s\n", what);
        g_passed++;
    } else {
        fail(what, "im2col scratch not bounded");
    }
}

/* ------------------------------------------------------------------------ */
/* linear                                                                    */
/* ------------------------------------------------------------------------ */

static void test_linear(bk_backend *bk, int m, int k, int n, int with_bias) {
    float *in = rand_buf((size_t)m * k, -1, 1), *w = rand_buf((size_t)n * k, -1, 1);
    float *bias = with_bias ? rand_buf((size_t)n, -1, 1) : NULL;
    float *out = poisoned((size_t)m * n);
    double *ref = xmalloc((size_t)m * n * sizeof *ref);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = bias ? bias[j] : 0.0;
            for (int t = 0; t < k; t++) s += (double)in[(size_t)i * k + t] * w[(size_t)j * k + t];
            ref[(size_t)i * n + j] = s;
        }
    const bk_linear_args a = {.in = in, .weight = w, .bias = bias, .out = out, .m = m, .k = k, .n = n};
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->linear(bk, &a);
    char what[128];
    snprintf(what, sizeof what, "linear m=%d k=%d n=%d %s", m, k, n, with_bias ? "bias" : "nobias");
    check(bk, "linear", what, st, mark, out, ref, (size_t)m * n, TOL);
    free(in), free(w), free(bias), free(out), free(ref);
}

/* ------------------------------------------------------------------------ */
/* group norm, layer norm                                                    */
/* ------------------------------------------------------------------------ */

/* Normalises x[0..count) into ref, then y = ref * gamma + beta per channel
 * of @len values, SiLU if asked. All float64. */
static void ref_norm(const float *x, size_t count, double eps, const float *gamma, const float *beta, int len,
                     int silu, double *ref) {
    double mean = 0.0, var = 0.0;
    for (size_t i = 0; i < count; i++) mean += x[i];
    mean /= (double)count;
    for (size_t i = 0; i < count; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    var /= (double)count;
    for (size_t i = 0; i < count; i++) {
        double y = ((double)x[i] - mean) / sqrt(var + eps) * gamma[i / len] + beta[i / len];
        ref[i] = silu ? y / (1.0 + exp(-y)) : y;
    }
}

/* @offset shifts the inputs away from zero mean (|mean| >> std) to check
 * that the statistics keep their digits. */
static void test_group_norm(bk_backend *bk, int n, int c, int hw, int groups, float eps, int silu, int in_place,
                            double offset) {
    const size_t total = (size_t)n * c * hw, gsize = (size_t)(c / groups) * hw;
    float *in = rand_buf(total, offset - 1, offset + 1);
    float *gamma = rand_buf((size_t)c, 0.5, 1.5), *beta = rand_buf((size_t)c, -1, 1);
    float *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    for (size_t g = 0; g < (size_t)n * groups; g++)
        ref_norm(in + g * gsize, gsize, eps, gamma + (g % groups) * (c / groups),
                 beta + (g % groups) * (c / groups), hw, silu, ref + g * gsize);
    if (in_place) memcpy(out, in, total * sizeof *out);
    const bk_group_norm_args a = {.in = in_place ? out : in, .gamma = gamma, .beta = beta, .out = out, .n = n,
                                  .c = c, .hw = hw, .groups = groups, .eps = eps, .fuse_silu = silu};
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->group_norm(bk, &a);
    char what[160];
    snprintf(what, sizeof what, "group_norm n=%d c=%d hw=%d groups=%d eps=%g%s%s mean~%g", n, c, hw, groups,
             (double)eps, silu ? " +silu" : "", in_place ? " in-place" : "", offset);
    check(bk, "group_norm", what, st, mark, out, ref, total, TOL);
    free(in), free(gamma), free(beta), free(out), free(ref);
}

static void test_layer_norm(bk_backend *bk, int m, int c, float eps, int in_place, double offset) {
    const size_t total = (size_t)m * c;
    float *in = rand_buf(total, offset - 1, offset + 1);
    float *gamma = rand_buf((size_t)c, 0.5, 1.5), *beta = rand_buf((size_t)c, -1, 1);
    float *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    double *row = xmalloc((size_t)c * sizeof *row);
    for (int i = 0; i < m; i++) {
        /* ref_norm wants per-channel gamma blocks of len; here every value is its own channel */
        ref_norm(in + (size_t)i * c, (size_t)c, eps, gamma, beta, 1, 0, row);
        memcpy(ref + (size_t)i * c, row, (size_t)c * sizeof *row);
    }
    if (in_place) memcpy(out, in, total * sizeof *out);
    const bk_layer_norm_args a = {.in = in_place ? out : in, .gamma = gamma, .beta = beta, .out = out, .m = m,
                                  .c = c, .eps = eps};
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->layer_norm(bk, &a);
    char what[128];
    snprintf(what, sizeof what, "layer_norm m=%d c=%d eps=%g%s mean~%g", m, c, (double)eps,
             in_place ? " in-place" : "", offset);
    check(bk, "layer_norm", what, st, mark, out, ref, total, TOL);
    free(in), free(gamma), free(beta), free(out), free(ref), free(row);
}

/* ------------------------------------------------------------------------ */
/* attention                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum { QKV_SEPARATE, KV_FUSED, QKV_FUSED } qkv_layout;
static const char *const layout_names[] = {"separate q,k,v", "q + fused kv [S,2HD]", "fused qkv [S,3HD]"};

/* Plain softmax(scale q k^T) v per (b, h, query), all float64. */
static void ref_attention(const bk_attention_args *a, double *ref) {
    const int D = a->head_dim, HD = a->heads * D;
    double *p = xmalloc((size_t)a->sk * sizeof *p), *o = xmalloc((size_t)D * sizeof *o);
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->heads; h++)
            for (int i = 0; i < a->sq; i++) {
                const float *q = a->q + ((size_t)b * a->sq + i) * a->q_stride + h * D;
                const int nk = a->causal && i + 1 < a->sk ? i + 1 : a->sk;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < nk; j++) {
                    const float *k = a->k + ((size_t)b * a->sk + j) * a->kv_stride + h * D;
                    double s = 0.0;
                    for (int d = 0; d < D; d++) s += (double)q[d] * k[d];
                    p[j] = s * a->scale;
                    if (p[j] > mx) mx = p[j];
                }
                memset(o, 0, (size_t)D * sizeof *o);
                for (int j = 0; j < nk; j++) {
                    const float *v = a->v + ((size_t)b * a->sk + j) * a->kv_stride + h * D;
                    const double e = exp(p[j] - mx);
                    sum += e;
                    for (int d = 0; d < D; d++) o[d] += e * v[d];
                }
                for (int d = 0; d < D; d++) ref[((size_t)b * a->sq + i) * HD + h * D + d] = o[d] / sum;
            }
    free(p), free(o);
}

/* Points q, k, v into freshly filled buffers laid out as @lay says. */
static float *attn_inputs(bk_attention_args *a, qkv_layout lay, float **extra) {
    const size_t HD = (size_t)a->heads * a->head_dim, rq = (size_t)a->batch * a->sq,
                 rk = (size_t)a->batch * a->sk;
    *extra = NULL;
    if (lay == QKV_FUSED) { /* one (B, S, 3*HD) projection; needs sq == sk */
        float *buf = rand_buf(rq * 3 * HD, -1, 1);
        a->q = buf, a->k = buf + HD, a->v = buf + 2 * HD;
        a->q_stride = a->kv_stride = (int)(3 * HD);
        return buf;
    }
    float *q = rand_buf(rq * HD, -1, 1);
    a->q = q, a->q_stride = (int)HD;
    if (lay == KV_FUSED) { /* (B, Sk, 2*HD) */
        *extra = rand_buf(rk * 2 * HD, -1, 1);
        a->k = *extra, a->v = *extra + HD, a->kv_stride = (int)(2 * HD);
    } else { /* k and v contiguous in one allocation, back to back */
        *extra = rand_buf(rk * 2 * HD, -1, 1);
        a->k = *extra, a->v = *extra + rk * HD, a->kv_stride = (int)HD;
    }
    return q;
}

/* Returns the arena bytes the op took at its peak. @leave_free > 0 first
 * fills the arena so only that many bytes remain (fewer heads per pass). */
static size_t test_attention(bk_backend *bk, int batch, int sq, int sk, int heads, int d, int causal,
                             qkv_layout lay, size_t leave_free) {
    bk_attention_args a = {.batch = batch, .sq = sq, .sk = sk, .heads = heads, .head_dim = d,
                           .scale = (float)(1.0 / sqrt((double)d)), .causal = causal};
    float *extra, *buf = attn_inputs(&a, lay, &extra);
    const size_t total = (size_t)batch * sq * heads * d;
    float *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    a.out = out;
    ref_attention(&a, ref);
    const size_t outer = bk_mark(bk);
    if (leave_free) bk_alloc(bk, bk->arena_size - outer - leave_free - 64);
    const size_t mark = bk_mark(bk);
    bk->arena_peak = mark;
    const diffuse_status st = bk->ops->attention(bk, &a);
    const size_t peak = bk->arena_peak - mark;
    char what[200];
    snprintf(what, sizeof what, "attention b=%d sq=%d sk=%d heads=%d d=%d%s %s scratch=%zuKiB%s", batch, sq, sk,
             heads, d, causal ? " causal" : "", layout_names[lay], peak >> 10,
             leave_free ? " (arena nearly full)" : "");
    check(bk, "attention", what, st, mark, out, ref, total, TOL);
    bk_release(bk, outer);
    free(buf), free(extra), free(out), free(ref);
    return peak;
}

static void test_attention_all(bk_backend *bk) {
    test_attention(bk, 2, 64, 64, 2, 40, 0, QKV_SEPARATE, 0);
    test_attention(bk, 2, 77, 77, 3, 64, 1, QKV_FUSED, 0);   /* CLIP text: causal */
    test_attention(bk, 2, 77, 77, 5, 64, 1, QKV_FUSED, 0);   /* 10 (batch, head) pairs: passes of 8 + 2 */
    test_attention(bk, 1, 300, 77, 2, 80, 0, KV_FUSED, 0);   /* cross attention */
    test_attention(bk, 2, 300, 77, 1, 160, 0, QKV_SEPARATE, 0);
    test_attention(bk, 1, 600, 600, 1, 160, 0, QKV_FUSED, 0); /* several query and key blocks */
    test_attention(bk, 1, 700, 700, 2, 64, 1, QKV_FUSED, 0);  /* causal across blocks */
    test_attention(bk, 1, 300, 520, 1, 40, 1, QKV_SEPARATE, 0);
    test_attention(bk, 1, 9, 1100, 1, 80, 0, KV_FUSED, 0);
    /* room for ~1.5 pairs of 256x512 tiles: one pair per pass */
    test_attention(bk, 2, 300, 600, 3, 40, 0, KV_FUSED, 800u << 10);

    /* Long: a 4096 x 4096 float score matrix would be 64 MiB, twice the arena. */
    const int s = 4096, heads = 2;
    const size_t full = (size_t)s * s * sizeof(float);
    const size_t peak = test_attention(bk, 1, s, s, heads, 40, 0, QKV_FUSED, 0);
    char what[160];
    snprintf(what, sizeof what, "attention 4096 scratch %zu KiB <= S*S*4/32 = %zu KiB", peak >> 10,
             (full / 32) >> 10);
    if (peak > 0 && peak <= full / 32) {
        printf("PASS %s\n", what);
        g_passed++;
    } else {
        fail(what, "score memory not bounded");
    }
}

/* ------------------------------------------------------------------------ */
/* pointwise and layout ops                                                  */
/* ------------------------------------------------------------------------ */

static double ref_unary(bk_unary f, double x) {
    switch (f) {
    case BK_UNARY_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case BK_UNARY_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case BK_UNARY_SILU: return x / (1.0 + exp(-x));
    }
    return NAN;
}

static void test_unary(bk_backend *bk, bk_unary f, const char *name, size_t n, int in_place) {
    float *in = rand_buf(n, -8, 8), *out = poisoned(n);
    double *ref = xmalloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++) ref[i] = ref_unary(f, in[i]);
    if (in_place) memcpy(out, in, n * sizeof *out);
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->unary(bk, f, in_place ? out : in, out, n);
    char what[96];
    snprintf(what, sizeof what, "%s n=%zu in [-8,8)%s", name, n, in_place ? " in-place" : "");
    check(bk, name, what, st, mark, out, ref, n, TOL);
    free(in), free(out), free(ref);
}

static void test_geglu(bk_backend *bk, int m, int d) {
    float *in = rand_buf((size_t)m * 2 * d, -4, 4), *out = poisoned((size_t)m * d);
    double *ref = xmalloc((size_t)m * d * sizeof *ref);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < d; j++)
            ref[(size_t)i * d + j] =
                in[(size_t)i * 2 * d + j] * ref_unary(BK_UNARY_GELU, in[(size_t)i * 2 * d + d + j]);
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->geglu(bk, in, out, m, d);
    char what[64];
    snprintf(what, sizeof what, "geglu m=%d d=%d", m, d);
    check(bk, "geglu", what, st, mark, out, ref, (size_t)m * d, TOL);
    free(in), free(out), free(ref);
}

static void test_upsample(bk_backend *bk, int nc, int h, int w) {
    const size_t total = (size_t)nc * 4 * h * w;
    float *in = rand_buf((size_t)nc * h * w, -1, 1), *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    for (int p = 0; p < nc; p++)
        for (int y = 0; y < 2 * h; y++)
            for (int x = 0; x < 2 * w; x++)
                ref[((size_t)p * 2 * h + y) * 2 * w + x] = in[((size_t)p * h + y / 2) * w + x / 2];
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->upsample2x(bk, in, out, nc, h, w);
    char what[64];
    snprintf(what, sizeof what, "upsample2x nc=%d %dx%d", nc, h, w);
    check(bk, "upsample2x", what, st, mark, out, ref, total, 0.0);
    free(in), free(out), free(ref);
}

static void test_concat(bk_backend *bk, int n, int ca, int cb, int hw) {
    const size_t total = (size_t)n * (ca + cb) * hw;
    float *a = rand_buf((size_t)n * ca * hw, -1, 1), *b = rand_buf((size_t)n * cb * hw, -1, 1);
    float *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < ca + cb; c++)
            for (int p = 0; p < hw; p++)
                ref[((size_t)i * (ca + cb) + c) * hw + p] =
                    c < ca ? a[((size_t)i * ca + c) * hw + p] : b[((size_t)i * cb + c - ca) * hw + p];
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->concat(bk, a, b, out, n, ca, cb, hw);
    char what[64];
    snprintf(what, sizeof what, "concat n=%d ca=%d cb=%d hw=%d", n, ca, cb, hw);
    check(bk, "concat", what, st, mark, out, ref, total, 0.0);
    free(a), free(b), free(out), free(ref);
}

/* @alias: 0 out separate, 1 out == a, 2 out == b. */
static void test_add(bk_backend *bk, size_t n, int alias) {
    float *a = rand_buf(n, -1, 1), *b = rand_buf(n, -1, 1), *out = poisoned(n);
    double *ref = xmalloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
    if (alias) memcpy(out, alias == 1 ? a : b, n * sizeof *out);
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->add(bk, alias == 1 ? out : a, alias == 2 ? out : b, out, n);
    char what[64];
    snprintf(what, sizeof what, "add n=%zu%s", n, alias == 1 ? " out=a" : alias == 2 ? " out=b" : "");
    check(bk, "add", what, st, mark, out, ref, n, TOL);
    free(a), free(b), free(out), free(ref);
}

static void test_embedding(bk_backend *bk, int rows, int batch, int seq, int dim, int with_pos) {
    const size_t total = (size_t)batch * seq * dim;
    int32_t *ids = xmalloc((size_t)batch * seq * sizeof *ids);
    for (int t = 0; t < batch * seq; t++) ids[t] = (int32_t)(rng_u01() * rows);
    float *table = rand_buf((size_t)rows * dim, -1, 1);
    float *pos = with_pos ? rand_buf((size_t)seq * dim, -1, 1) : NULL, *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    for (int t = 0; t < batch * seq; t++)
        for (int c = 0; c < dim; c++)
            ref[(size_t)t * dim + c] =
                (double)table[(size_t)ids[t] * dim + c] + (pos ? pos[(size_t)(t % seq) * dim + c] : 0.0);
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->embedding(bk, ids, table, rows, pos, out, batch, seq, dim);
    char what[96];
    snprintf(what, sizeof what, "embedding rows=%d batch=%d seq=%d dim=%d%s", rows, batch, seq, dim,
             with_pos ? " +pos" : "");
    check(bk, "embedding", what, st, mark, out, ref, total, TOL);
    free(ids), free(table), free(pos), free(out), free(ref);
}

static void test_transpose(bk_backend *bk, int n, int r, int k) {
    const size_t total = (size_t)n * r * k;
    float *in = rand_buf(total, -1, 1), *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    for (int b = 0; b < n; b++)
        for (int i = 0; i < r; i++)
            for (int j = 0; j < k; j++) ref[((size_t)b * k + j) * r + i] = in[((size_t)b * r + i) * k + j];
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->transpose(bk, in, out, n, r, k);
    char what[64];
    snprintf(what, sizeof what, "transpose n=%d r=%d k=%d", n, r, k);
    check(bk, "transpose", what, st, mark, out, ref, total, 0.0);
    free(in), free(out), free(ref);
}

static void test_add_channel(bk_backend *bk, int n, int c, int hw, int in_place) {
    const size_t total = (size_t)n * c * hw;
    float *in = rand_buf(total, -1, 1), *bias = rand_buf((size_t)n * c, -1, 1), *out = poisoned(total);
    double *ref = xmalloc(total * sizeof *ref);
    for (size_t i = 0; i < total; i++) ref[i] = (double)in[i] + bias[i / hw];
    if (in_place) memcpy(out, in, total * sizeof *out);
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->add_channel(bk, in_place ? out : in, bias, out, n, c, hw);
    char what[64];
    snprintf(what, sizeof what, "add_channel n=%d c=%d hw=%d%s", n, c, hw, in_place ? " in-place" : "");
    check(bk, "add_channel", what, st, mark, out, ref, total, TOL);
    free(in), free(bias), free(out), free(ref);
}

static void test_scale(bk_backend *bk, size_t n, float sc, float b, int in_place) {
    float *in = rand_buf(n, -1, 1), *out = poisoned(n);
    double *ref = xmalloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++) ref[i] = (double)in[i] * sc + b;
    if (in_place) memcpy(out, in, n * sizeof *out);
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->scale(bk, in_place ? out : in, out, n, sc, b);
    char what[80];
    snprintf(what, sizeof what, "scale n=%zu s=%g b=%g%s", n, (double)sc, (double)b, in_place ? " in-place" : "");
    check(bk, "scale", what, st, mark, out, ref, n, TOL);
    free(in), free(out), free(ref);
}

/* upload then download through a buffer in the arena: bytes come back exact. */
static void test_copies(bk_backend *bk, size_t n) {
    float *host = rand_buf(n, -1, 1), *back = poisoned(n);
    double *ref = xmalloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++) ref[i] = host[i];
    const size_t mark = bk_mark(bk);
    float *dev = bk_alloc(bk, n * sizeof *dev);
    diffuse_status st = dev ? bk->ops->upload(bk, dev, host, n * sizeof *host) : bk->err.status;
    if (st == DIFFUSE_OK) st = bk->ops->download(bk, back, dev, n * sizeof *back);
    bk_release(bk, mark);
    char what[64];
    snprintf(what, sizeof what, "upload+download n=%zu", n);
    check(bk, "upload/download", what, st, mark, back, ref, n, 0.0);
    free(host), free(back), free(ref);
}

/* ------------------------------------------------------------------------ */
/* timestep embedding                                                        */
/* ------------------------------------------------------------------------ */

/* diffusers' get_timestep_embedding. @torch_f32 rounds the tensors diffusers
 * keeps in float32 (exponent, exp(exponent), t*freq, scale*arg) as torch does,
 * with sin/cos in float64; without it, everything is exact float64 math. */
static void ref_timestep(const bk_timestep_args *a, int torch_f32, double *ref) {
    const int half = a->dim / 2;
    for (int r = 0; r < a->n; r++) {
        double *row = ref + (size_t)r * a->dim;
        for (int i = 0; i < half; i++) {
            double arg;
            if (torch_f32) {
                const float e = ((float)-log((double)a->max_period) * (float)i) /
                                (float)((double)half - a->downscale_freq_shift);
                const float freq = (float)exp((double)e);
                arg = (double)(a->scale * (a->t[r] * freq));
            } else {
                arg = a->scale * (double)a->t[r] *
                      exp(-log((double)a->max_period) * i / ((double)half - a->downscale_freq_shift));
            }
            row[a->flip_sin_to_cos ? half + i : i] = sin(arg);
            row[a->flip_sin_to_cos ? i : half + i] = cos(arg);
        }
        if (a->dim % 2) row[a->dim - 1] = 0.0;
    }
}

static void test_timestep(bk_backend *bk, int n, int dim, int flip, float shift, float scale) {
    float *t = rand_buf((size_t)n, 1, 1000);
    t[0] = 999.0f; /* the first step of a 1000-step schedule */
    float *out = poisoned((size_t)n * dim);
    double *ref = xmalloc((size_t)n * dim * sizeof *ref), *exact = xmalloc((size_t)n * dim * sizeof *exact);
    const bk_timestep_args a = {.t = t, .out = out, .n = n, .dim = dim, .flip_sin_to_cos = flip,
                                .downscale_freq_shift = shift, .scale = scale, .max_period = 10000.0f};
    ref_timestep(&a, 1, ref);
    ref_timestep(&a, 0, exact);
    const size_t mark = bk_mark(bk);
    const diffuse_status st = bk->ops->timestep_embedding(bk, &a);
    char what[128];
    snprintf(what, sizeof what, "timestep n=%d dim=%d flip=%d shift=%g scale=%g", n, dim, flip, (double)shift,
             (double)scale);
    check(bk, "timestep", what, st, mark, out, ref, (size_t)n * dim, TOL);
    /* against exact math the float32 arguments of diffusers cost up to
     * |arg| * 2^-24 ~ 6e-5 near t = 1000 */
    strcat(what, " vs exact float64 math");
    check(bk, "timestep (vs exact math)", what, st, mark, out, exact, (size_t)n * dim, 2e-4);
    free(t), free(out), free(ref), free(exact);
}

/* ------------------------------------------------------------------------ */
/* argument checks, arena                                                    */
/* ------------------------------------------------------------------------ */

/* The call must fail with @want, record it in bk->err with a message, and
 * leave the arena as it was. */
static void expect_status(bk_backend *bk, const char *what, diffuse_status st, diffuse_status want, size_t mark) {
    char why[DF_ERR_MSG_MAX + 64];
    if (st != want || bk->err.status != want || !bk->err.msg[0] || bk->arena_used != mark) {
        snprintf(why, sizeof why, "status %d (want %d), recorded %d \"%s\", arena %zu -> %zu", (int)st,
                 (int)want, (int)bk->err.status, bk->err.msg, mark, bk->arena_used);
        fail(what, why);
    } else {
        printf("PASS reject %s (%s)\n", what, bk->err.msg);
        g_passed++;
    }
    df_error_clear(&bk->err);
}

#define EXPECT_INVALID(what, call) expect_status(bk, what, (call), DIFFUSE_ERR_INVALID_ARGUMENT, bk_mark(bk))

static void test_rejects(bk_backend *bk) {
    static float buf[256];
    const bk_ops *o = bk->ops;
    bk_conv2d_args cv = {buf, buf, NULL, buf, 1, 1, 4, 4, 1, 3, 3, 1, 1, 1, 1, 1, 0, 0};
    bk_conv2d_args cv_bad = cv;
    cv_bad.in = NULL;
    EXPECT_INVALID("conv2d NULL input", o->conv2d(bk, &cv_bad));
    cv_bad = cv, cv_bad.c_in = 0;
    EXPECT_INVALID("conv2d c_in=0", o->conv2d(bk, &cv_bad));
    cv_bad = cv, cv_bad.pad_left = -1;
    EXPECT_INVALID("conv2d negative padding", o->conv2d(bk, &cv_bad));
    cv_bad = cv, cv_bad.kh = cv_bad.kw = 7;
    EXPECT_INVALID("conv2d kernel larger than input", o->conv2d(bk, &cv_bad));
    EXPECT_INVALID("conv2d NULL args", o->conv2d(bk, NULL));

    bk_linear_args ln = {buf, NULL, NULL, buf, 2, 2, 2};
    EXPECT_INVALID("linear NULL weight", o->linear(bk, &ln));
    ln.weight = buf, ln.k = 0;
    EXPECT_INVALID("linear k=0", o->linear(bk, &ln));

    bk_group_norm_args gn = {buf, buf, buf, buf, 1, 6, 4, 4, 1e-5f, 0};
    EXPECT_INVALID("group_norm groups not dividing channels", o->group_norm(bk, &gn));
    gn.groups = 3, gn.beta = NULL;
    EXPECT_INVALID("group_norm NULL beta", o->group_norm(bk, &gn));
    gn.beta = buf, gn.eps = -1.0f;
    EXPECT_INVALID("group_norm negative eps", o->group_norm(bk, &gn));
    bk_layer_norm_args lnorm = {buf, buf, buf, buf, 0, 4, 1e-5f};
    EXPECT_INVALID("layer_norm m=0", o->layer_norm(bk, &lnorm));

    bk_attention_args at = {buf, buf, buf, buf, 1, 2, 2, 2, 8, 16, 8, 0.35f, 0};
    EXPECT_INVALID("attention kv_stride < heads*head_dim", o->attention(bk, &at));
    at.kv_stride = 16, at.v = NULL;
    EXPECT_INVALID("attention NULL v", o->attention(bk, &at));
    at.v = buf, at.heads = 0;
    EXPECT_INVALID("attention heads=0", o->attention(bk, &at));

    bk_timestep_args ts = {buf, buf, 1, 2, 1, 1.0f, 1.0f, 10000.0f};
    EXPECT_INVALID("timestep half dim - shift = 0", o->timestep_embedding(bk, &ts));
    ts.downscale_freq_shift = 0.0f, ts.n = 0;
    EXPECT_INVALID("timestep n=0", o->timestep_embedding(bk, &ts));

    EXPECT_INVALID("unary unknown function", o->unary(bk, (bk_unary)7, buf, buf, 4));
    EXPECT_INVALID("unary NULL input", o->unary(bk, BK_UNARY_SILU, NULL, buf, 4));
    EXPECT_INVALID("unary n=0", o->unary(bk, BK_UNARY_GELU, buf, buf, 0));
    EXPECT_INVALID("geglu d=0", o->geglu(bk, buf, buf, 2, 0));
    EXPECT_INVALID("upsample2x NULL output", o->upsample2x(bk, buf, NULL, 1, 2, 2));
    EXPECT_INVALID("concat cb=0", o->concat(bk, buf, buf, buf, 1, 2, 0, 4));
    EXPECT_INVALID("add NULL b", o->add(bk, buf, NULL, buf, 4));
    static const int32_t ids[3] = {0, 5, 2};
    EXPECT_INVALID("embedding token id >= rows", o->embedding(bk, ids, buf, 5, NULL, buf, 1, 3, 4));
    EXPECT_INVALID("transpose in == out", o->transpose(bk, buf, buf, 1, 4, 4));
    EXPECT_INVALID("add_channel NULL bias", o->add_channel(bk, buf, NULL, buf, 1, 2, 4));
    EXPECT_INVALID("scale NULL input", o->scale(bk, NULL, buf, 4, 1.0f, 0.0f));
}

/* Ops whose scratch does not fit report DIFFUSE_ERR_OUT_OF_MEMORY. */
static void test_out_of_memory(bk_backend *bk) {
    const size_t outer = bk_mark(bk);
    float *in = rand_buf(16 * 33 * 31, -1, 1), *w = rand_buf(8 * 16 * 9, -1, 1), *out = poisoned(8 * 33 * 31);
    /* one im2col row needs 16*9*31*4 = 17856 bytes; leave 10000 */
    bk_alloc(bk, bk->arena_size - outer - 10000 - 64);
    const bk_conv2d_args cv = {in, w, NULL, out, 1, 16, 33, 31, 8, 3, 3, 1, 1, 1, 1, 1, 0, 0};
    expect_status(bk, "conv2d when the arena cannot hold one im2col row", bk->ops->conv2d(bk, &cv),
                  DIFFUSE_ERR_OUT_OF_MEMORY, bk_mark(bk));
    const bk_attention_args at = {in, w, w, out, 1, 64, 64, 1, 16, 16, 16, 0.25f, 0};
    expect_status(bk, "attention when the arena cannot hold its score tile", bk->ops->attention(bk, &at),
                  DIFFUSE_ERR_OUT_OF_MEMORY, bk_mark(bk));
    bk_release(bk, outer);
    free(in), free(w), free(out);
}

/* arena_reserve grows, keeps the bytes in use, aligns to 64. */
static void test_arena(bk_backend *bk) {
    const char *what = "arena_reserve grows, keeps used bytes, 64-byte aligned";
    int ok = bk->ops->arena_reserve(bk, 1000) == DIFFUSE_OK && bk->arena_size >= 1000;
    unsigned char *p = ok ? bk_alloc(bk, 300) : NULL;
    if (p)
        for (int i = 0; i < 300; i++) p[i] = (unsigned char)(i * 7);
    ok = ok && p && bk->ops->arena_reserve(bk, ARENA_BYTES) == DIFFUSE_OK && bk->arena_size >= ARENA_BYTES;
    for (int i = 0; ok && i < 300; i++) ok = bk->arena[i] == (unsigned char)(i * 7);
    ok = ok && ((uintptr_t)bk->arena % 64) == 0 && bk->arena_used == 300;
    ok = ok && bk->ops->arena_reserve(bk, 10) == DIFFUSE_OK && bk->arena_size >= ARENA_BYTES;
    bk_release(bk, 0);
    if (ok) {
        printf("PASS %s\n", what);
        g_passed++;
    } else {
        fail(what, bk->err.msg);
    }
}

/* ------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_pointwise_all(bk_backend *bk) {
    test_unary(bk, BK_UNARY_GELU, "gelu", 1001, 0);
    test_unary(bk, BK_UNARY_GELU, "gelu", 100003, 1);
    test_unary(bk, BK_UNARY_QUICK_GELU, "quick_gelu", 1001, 0);
    test_unary(bk, BK_UNARY_QUICK_GELU, "quick_gelu", 100003, 1);
    test_unary(bk, BK_UNARY_SILU, "silu", 1001, 0);
    test_unary(bk, BK_UNARY_SILU, "silu", 100003, 1);
    test_geglu(bk, 7, 9);
    test_geglu(bk, 77, 640);
    test_upsample(bk, 6, 7, 9);
    test_upsample(bk, 8, 32, 33);
    test_concat(bk, 2, 3, 5, 63);
    test_concat(bk, 2, 320, 640, 64);
    test_add(bk, 1001, 0);
    test_add(bk, 100003, 1);
    test_add(bk, 1001, 2);
    test_embedding(bk, 50, 2, 7, 33, 1);
    test_embedding(bk, 1000, 2, 77, 64, 0);
    test_transpose(bk, 2, 37, 45);
    test_transpose(bk, 1, 320, 64);
    test_add_channel(bk, 2, 5, 63, 0);
    test_add_channel(bk, 2, 320, 64, 1);
    test_scale(bk, 1001, 0.18215f, 0.5f, 0);
    test_scale(bk, 100003, -2.0f, 1.0f, 1);
    test_copies(bk, 1001);
    test_timestep(bk, 3, 320, 1, 0.0f, 1.0f); /* SD 1.x / 2.x UNet */
    test_timestep(bk, 4, 320, 0, 1.0f, 1.0f);
    test_timestep(bk, 2, 321, 1, 1.0f, 1.0f);
    test_timestep(bk, 2, 7, 0, 0.0f, 2.5f);
}

static void test_norms_all(bk_backend *bk) {
    test_group_norm(bk, 2, 64, 63, 32, 1e-5f, 0, 0, 0.0);
    test_group_norm(bk, 1, 64, 63, 32, 1e-6f, 1, 0, 0.0);
    test_group_norm(bk, 2, 320, 15 * 13, 32, 1e-6f, 1, 1, 0.0);
    test_group_norm(bk, 1, 96, 7 * 9, 32, 1e-5f, 0, 1, 0.0);
    test_group_norm(bk, 1, 3, 7 * 9, 3, 1e-5f, 1, 0, 0.0);
    test_group_norm(bk, 1, 64, 7 * 9, 32, 1e-6f, 0, 0, 300.0);
    test_layer_norm(bk, 77, 768, 1e-5f, 0, 0.0);
    test_layer_norm(bk, 5, 7, 1e-6f, 0, 0.0);
    test_layer_norm(bk, 300, 320, 1e-5f, 1, 0.0);
    test_layer_norm(bk, 9, 1024, 1e-5f, 0, 300.0);
}

int main(void) {
    const double t0 = now_s();
    bk_backend *bk = NULL;
    df_error err = {0};
    if (bk_cpu_create(0, &bk, &err) != DIFFUSE_OK) {
        printf("FAIL bk_cpu_create: %s\n", err.msg);
        return 1;
    }
    printf("cpu backend: %d threads\n", bk->n_threads);
    test_arena(bk);
    test_rejects(bk);
    test_out_of_memory(bk);
    test_conv2d_all(bk);
    test_linear(bk, 5, 7, 3, 1);
    test_linear(bk, 77, 768, 320, 0);
    test_linear(bk, 77, 768, 320, 1);
    test_linear(bk, 300, 64, 130, 1);
    test_norms_all(bk);
    test_pointwise_all(bk);
    test_attention_all(bk);
    bk->ops->destroy(bk);

    printf("worst relerr per op:");
    for (int i = 0; i < MAX_OPS && g_worst[i].op; i++) printf(" %s=%.1e", g_worst[i].op, g_worst[i].err);
    printf("\n%d passed, %d failed in %.1f s\n", g_passed, g_failed, now_s() - t0);
    return g_failed ? 1 : 0;
}
