/*
 * test_backend_ops.c - every op of the CUDA backend module (the one
 * DIFFUSE_CUDA_MODULE names: in the test suite the emulated module,
 * tests/cuda/libdiffuse_cuda_emu.so; on a GPU machine the real one) against
 * the CPU backend on the same seeded random inputs. Inputs reach the device
 * through upload(), outputs come back through download(); weights are host
 * pointers, as the nets pass them (the backend must map them to device
 * copies). Device outputs are poisoned (NaN) before each op. Metric:
 * ||cuda - cpu|| / ||cpu|| <= 1e-5 (fp32). Also: a weight reused from the
 * cache, argument and device errors become statuses with messages, the
 * module's device info, and an arena that grows between passes keeps its
 * contents.
 */
#include "backend.h"
#include "devices.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static int g_failed, g_passed;
static uint64_t g_rng = 0x243F6A8885A308D3ull;

static double rng_u01(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* Weights must stay at their addresses for the backend's lifetime (the
 * CUDA backend caches device copies by host address, as model weights
 * live as long as the model): they are kept here until the end. */
static float *g_keep[256];
static int g_nkeep;
static float *keep(float *w) {
    if (g_nkeep < 256) g_keep[g_nkeep++] = w;
    return w;
}

static float *rnd(size_t n, double lo, double hi) {
    float *p = malloc(n * sizeof *p);
    if (!p) exit(2);
    for (size_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * rng_u01());
    return p;
}

static void check(int ok, const char *fmt, const char *name, double v) {
    printf("%s %-40s ", ok ? "PASS" : "FAIL", name);
    printf(fmt, v);
    printf("\n");
    if (ok)
        g_passed++;
    else
        g_failed++;
}

/* The two backends of one comparison. */
static bk_backend *g_cpu, *g_gpu;

/* A device copy of @n host floats on @bk (arena). */
static float *dev(bk_backend *bk, const float *host, size_t n) {
    float *d = bk_alloc(bk, n * sizeof(float));
    if (!d || bk->ops->upload(bk, d, host, n * sizeof(float)) != DIFFUSE_OK) {
        printf("FAIL upload of %zu floats on %s: %s\n", n, bk->ops->name, bk->err.msg);
        exit(1);
    }
    return d;
}

/* An output buffer of @n floats filled with NaN. */
static float *out_buf(bk_backend *bk, size_t n) {
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = dev(bk, h, n);
    free(h);
    return d;
}

static double rel_err(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (a[i] != a[i]) return INFINITY;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* One op on one backend: @run gets the backend and returns the device
 * output (@n floats) or NULL with the backend's error set. */
typedef float *(*op_fn)(bk_backend *bk, const void *ctx);

static void compare(const char *name, op_fn run, const void *ctx, size_t n) {
    float *res[2] = {NULL, NULL};
    bk_backend *bks[2] = {g_cpu, g_gpu};
    for (int i = 0; i < 2; i++) {
        const size_t mark = bk_mark(bks[i]);
        float *d = run(bks[i], ctx);
        if (!d) {
            printf("FAIL %-40s on %s: %s\n", name, bks[i]->ops->name, bks[i]->err.msg);
            g_failed++;
            bk_release(bks[i], mark);
            free(res[0]);
            return;
        }
        res[i] = malloc(n * sizeof(float));
        if (bks[i]->ops->download(bks[i], res[i], d, n * sizeof(float)) != DIFFUSE_OK) {
            printf("FAIL %-40s download on %s: %s\n", name, bks[i]->ops->name, bks[i]->err.msg);
            g_failed++;
            bk_release(bks[i], mark);
            free(res[0]);
            free(res[1]);
            return;
        }
        bk_release(bks[i], mark);
    }
    const double e = rel_err(res[1], res[0], n);
    check(e <= TOL, "rel err %.3g", name, e);
    free(res[0]);
    free(res[1]);
}

/* ---------------------------------------------------------------- cases */

typedef struct conv_case {
    bk_conv2d_args a; /* in/out set per backend */
    const float *in_host;
} conv_case;

static float *run_conv(bk_backend *bk, const void *ctx) {
    const conv_case *c = ctx;
    bk_conv2d_args a = c->a;
    const int ho = (a.h + a.pad_top + a.pad_bottom - a.kh) / a.stride + 1;
    const int wo = (a.w + a.pad_left + a.pad_right - a.kw) / a.stride + 1;
    a.in = dev(bk, c->in_host, (size_t)a.n * a.c_in * a.h * a.w);
    a.out = out_buf(bk, (size_t)a.n * a.c_out * ho * wo);
    return bk->ops->conv2d(bk, &a) == DIFFUSE_OK ? a.out : NULL;
}

static void conv_circ(const char *name, int n, int cin, int h, int w, int cout, int kh, int kw, int stride, int pt,
                      int pb, int pl, int pr, int bias, int circ_x, int circ_y) {
    conv_case c;
    memset(&c, 0, sizeof c);
    c.a = (bk_conv2d_args){NULL, NULL, NULL, NULL, n, cin, h, w, cout, kh, kw, stride, pt, pb, pl, pr, circ_x, circ_y};
    float *in = rnd((size_t)n * cin * h * w, -1, 1), *wt = keep(rnd((size_t)cout * cin * kh * kw, -0.5, 0.5));
    float *b = keep(rnd((size_t)cout, -1, 1));
    c.in_host = in;
    c.a.weight = wt;
    c.a.bias = bias ? b : NULL;
    const int ho = (h + pt + pb - kh) / stride + 1, wo = (w + pl + pr - kw) / stride + 1;
    compare(name, run_conv, &c, (size_t)n * cout * ho * wo);
    free(in);
}

static void conv(const char *name, int n, int cin, int h, int w, int cout, int kh, int kw, int stride, int pt, int pb,
                 int pl, int pr, int bias) {
    conv_circ(name, n, cin, h, w, cout, kh, kw, stride, pt, pb, pl, pr, bias, 0, 0);
}

typedef struct lin_case {
    bk_linear_args a;
    const float *in_host;
} lin_case;

static float *run_linear(bk_backend *bk, const void *ctx) {
    const lin_case *c = ctx;
    bk_linear_args a = c->a;
    a.in = dev(bk, c->in_host, (size_t)a.m * a.k);
    a.out = out_buf(bk, (size_t)a.m * a.n);
    return bk->ops->linear(bk, &a) == DIFFUSE_OK ? a.out : NULL;
}

static void linear(const char *name, int m, int k, int n, int bias, int twice) {
    float *in = rnd((size_t)m * k, -1, 1), *w = keep(rnd((size_t)n * k, -0.5, 0.5)), *b = keep(rnd((size_t)n, -1, 1));
    lin_case c = {{NULL, w, bias ? b : NULL, NULL, m, k, n}, in};
    compare(name, run_linear, &c, (size_t)m * n);
    if (twice) { /* the same weight again: found in the cache, new input */
        float *in2 = rnd((size_t)m * k, -1, 1);
        c.in_host = in2;
        char nm[96];
        snprintf(nm, sizeof nm, "%s (cached weight)", name);
        compare(nm, run_linear, &c, (size_t)m * n);
        free(in2);
    }
    free(in);
}

typedef struct gn_case {
    bk_group_norm_args a;
    const float *in_host;
    int in_place;
} gn_case;

static float *run_gn(bk_backend *bk, const void *ctx) {
    const gn_case *c = ctx;
    bk_group_norm_args a = c->a;
    const size_t n = (size_t)a.n * a.c * a.hw;
    float *in = dev(bk, c->in_host, n);
    a.in = in;
    a.out = c->in_place ? in : out_buf(bk, n);
    return bk->ops->group_norm(bk, &a) == DIFFUSE_OK ? a.out : NULL;
}

static void group_norm(const char *name, int n, int ch, int hw, int groups, int silu, int in_place) {
    float *in = rnd((size_t)n * ch * hw, -2, 3), *g = keep(rnd(ch, 0.5, 1.5)), *b = keep(rnd(ch, -0.5, 0.5));
    gn_case c = {{NULL, g, b, NULL, n, ch, hw, groups, 1e-5f, silu}, in, in_place};
    compare(name, run_gn, &c, (size_t)n * ch * hw);
    free(in);
}

typedef struct ln_case {
    bk_layer_norm_args a;
    const float *in_host;
} ln_case;

static float *run_ln(bk_backend *bk, const void *ctx) {
    const ln_case *c = ctx;
    bk_layer_norm_args a = c->a;
    a.in = dev(bk, c->in_host, (size_t)a.m * a.c);
    a.out = out_buf(bk, (size_t)a.m * a.c);
    return bk->ops->layer_norm(bk, &a) == DIFFUSE_OK ? a.out : NULL;
}

typedef struct att_case {
    bk_attention_args a;
    const float *q, *kv; /* host: q (B*Sq, q_stride), kv (B*Sk, kv_stride) holding k and v */
    int v_offset;
} att_case;

static float *run_att(bk_backend *bk, const void *ctx) {
    const att_case *c = ctx;
    bk_attention_args a = c->a;
    const float *q = dev(bk, c->q, (size_t)a.batch * a.sq * a.q_stride);
    const float *kv = dev(bk, c->kv, (size_t)a.batch * a.sk * a.kv_stride);
    a.q = q;
    a.k = kv;
    a.v = kv + c->v_offset;
    a.out = out_buf(bk, (size_t)a.batch * a.sq * a.heads * a.head_dim);
    return bk->ops->attention(bk, &a) == DIFFUSE_OK ? a.out : NULL;
}

static void attention(const char *name, int batch, int sq, int sk, int heads, int hd, int causal) {
    const int inner = heads * hd, kv_stride = 2 * inner + 3, q_stride = inner + 5;
    float *q = rnd((size_t)batch * sq * q_stride, -1, 1), *kv = rnd((size_t)batch * sk * kv_stride, -1, 1);
    att_case c = {{NULL, NULL, NULL, NULL, batch, sq, sk, heads, hd, q_stride, kv_stride, 1.0f / sqrtf((float)hd),
                   causal},
                  q, kv, inner};
    compare(name, run_att, &c, (size_t)batch * sq * inner);
    free(q);
    free(kv);
}

/* Fields past the ones a case names are zero (designated style). */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef struct misc_case {
    int op;
    const float *a, *b; /* host inputs */
    size_t na, nb, nout;
    int i0, i1, i2, i3;
    float f0, f1;
    const int32_t *ids;
    const float *weight, *pos; /* host weights */
} misc_case;

static float *run_misc(bk_backend *bk, const void *ctx) {
    const misc_case *c = ctx;
    const bk_ops *o = bk->ops;
    float *a = c->na ? dev(bk, c->a, c->na) : NULL, *b = c->nb ? dev(bk, c->b, c->nb) : NULL;
    float *out = out_buf(bk, c->nout);
    diffuse_status st = DIFFUSE_ERR_INVALID_ARGUMENT;
    switch (c->op) {
    case 0: case 1: case 2: st = o->unary(bk, (bk_unary)c->op, a, out, c->na); break;
    case 3: st = o->geglu(bk, a, out, c->i0, c->i1); break;
    case 4: st = o->upsample2x(bk, a, out, c->i0, c->i1, c->i2); break;
    case 5: st = o->concat(bk, a, b, out, c->i0, c->i1, c->i2, c->i3); break;
    case 6: st = o->add(bk, a, b, out, c->na); break;
    case 7: st = o->transpose(bk, a, out, c->i0, c->i1, c->i2); break;
    case 8: st = o->add_channel(bk, a, b, out, c->i0, c->i1, c->i2); break;
    case 9: st = o->scale(bk, a, out, c->na, c->f0, c->f1); break;
    case 10:
        st = o->embedding(bk, c->ids, c->weight, c->i0, c->pos, out, c->i1, c->i2, c->i3);
        break;
    case 11: {
        const bk_timestep_args t = {c->a, out, c->i0, c->i1, c->i2, c->f0, 1.0f, 10000.0f};
        st = o->timestep_embedding(bk, &t);
        break;
    }
    case 12: st = o->add_channel(bk, a, b, a, c->i0, c->i1, c->i2); out = a; break; /* in place */
    case 13: st = o->unary(bk, BK_UNARY_SILU, a, a, c->na); out = a; break;       /* in place */
    }
    return st == DIFFUSE_OK ? out : NULL;
}

static void misc(const char *name, misc_case c) { compare(name, run_misc, &c, c.nout); }

/* A device error (the attention kernel refuses head dim 200) and an argument
 * error must come back as statuses with messages, and the backend must work
 * afterwards. */
static void errors(void) {
    bk_backend *bk = g_gpu;
    const size_t mark = bk_mark(bk);
    float *h = rnd(2 * 3 * 200, -1, 1);
    float *d = dev(bk, h, 2 * 3 * 200), *o = out_buf(bk, 3 * 200);
    const bk_attention_args a = {d, d, d, o, 1, 3, 3, 1, 200, 200, 200, 0.1f, 0};
    diffuse_status st = bk->ops->attention(bk, &a);
    printf("  attention head_dim 200: %s: %s\n", diffuse_status_string(st), bk->err.msg);
    check(st == DIFFUSE_ERR_DEVICE && strstr(bk->err.msg, "attention") != NULL, "status %g", "device error -> status",
          (double)st);
    const bk_linear_args l = {d, h, NULL, o, 0, 4, 4};
    st = bk->ops->linear(bk, &l);
    check(st == DIFFUSE_ERR_INVALID_ARGUMENT && bk->err.msg[0], "status %g", "bad arguments -> status", (double)st);
    st = bk->ops->unary(bk, BK_UNARY_GELU, d, o, 10);
    check(st == DIFFUSE_OK, "status %g", "backend usable after errors", (double)st);
    bk_release(bk, mark);
    free(h);
}

/* Growing the arena between passes keeps the bytes in use. */
static void arena_grow(void) {
    bk_backend *bk = g_gpu;
    const size_t mark = bk_mark(bk);
    float *h = rnd(1000, -1, 1), back[1000];
    float *d = dev(bk, h, 1000);
    const size_t off = (size_t)((uint8_t *)d - bk->arena);
    diffuse_status st = bk->ops->arena_reserve(bk, bk->arena_size + ((size_t)8 << 20));
    if (st == DIFFUSE_OK) st = bk->ops->download(bk, back, bk->arena + off, sizeof back);
    check(st == DIFFUSE_OK && memcmp(back, h, sizeof back) == 0, "arena %g MiB", "arena_reserve keeps contents",
          (double)bk->arena_size / (1 << 20));
    bk_release(bk, mark);
    free(h);
}

int main(void) {
    df_error err;
    memset(&err, 0, sizeof err);
    char note[256];
    const int gpus = df_cuda_probe(note, sizeof note);
    printf("probe: %d device(s): %s\n", gpus, note);
    if (gpus <= 0) {
        printf("FAIL no CUDA module/device (DIFFUSE_CUDA_MODULE=%s)\n",
               getenv("DIFFUSE_CUDA_MODULE") ? getenv("DIFFUSE_CUDA_MODULE") : "(unset)");
        return 1;
    }
    diffuse_device_info info;
    df_cuda_device_info(0, &info);
    printf("device 0: %s, %llu bytes: %s\n", info.name, (unsigned long long)info.memory_bytes, info.note);
    check(info.available == 1 && info.name[0], "%g", "device info", (double)info.available);
    diffuse_status st = df_cuda_create(0, DIFFUSE_PRECISION_F16, &g_gpu, &err);
    check(st == DIFFUSE_ERR_UNSUPPORTED && !g_gpu, "status %g", "F16 refused for now", (double)st);
    if (bk_cpu_create(1, &g_cpu, &err) != DIFFUSE_OK ||
        df_cuda_create(0, DIFFUSE_PRECISION_F32, &g_gpu, &err) != DIFFUSE_OK) {
        printf("FAIL creating backends: %s\n", err.msg);
        return 1;
    }
    const size_t arena = (size_t)24 << 20;
    if (g_cpu->ops->arena_reserve(g_cpu, arena) != DIFFUSE_OK ||
        g_gpu->ops->arena_reserve(g_gpu, arena) != DIFFUSE_OK) {
        printf("FAIL arena: %s %s\n", g_cpu->err.msg, g_gpu->err.msg);
        return 1;
    }
    printf("backends: %s vs %s\n", g_cpu->ops->name, g_gpu->ops->name);

    conv("conv2d 3x3 same + bias (2,5,9,11)->7", 2, 5, 9, 11, 7, 3, 3, 1, 1, 1, 1, 1, 1);
    conv("conv2d 3x3 stride 2 pad 1", 1, 6, 10, 9, 4, 3, 3, 2, 1, 1, 1, 1, 1);
    conv("conv2d 3x3 stride 2 pad (0,1,0,1)", 1, 6, 10, 9, 4, 3, 3, 2, 0, 1, 0, 1, 1);
    conv("conv2d 1x1 no bias", 2, 12, 5, 7, 9, 1, 1, 1, 0, 0, 0, 0, 0);
    conv("conv2d 2x2 crop kernel", 3, 1, 6, 7, 1, 2, 2, 1, 0, 0, 0, 0, 0);
    conv_circ("conv2d 3x3 circular x", 1, 4, 8, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0);
    conv_circ("conv2d 3x3 circular x and y", 2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
    linear("linear 37x29 -> 23 + bias", 37, 29, 23, 1, 1);
    linear("linear 5x64 -> 96 no bias", 5, 64, 96, 0, 0);
    group_norm("group_norm 32 groups, SiLU", 2, 64, 37, 32, 1, 0);
    group_norm("group_norm 4 groups, in place", 1, 12, 100, 4, 0, 1);
    {
        float *in = rnd(7 * 77, -2, 3), *g = keep(rnd(77, 0.5, 1.5)), *b = keep(rnd(77, -0.5, 0.5));
        ln_case c = {{NULL, g, b, NULL, 7, 77, 1e-5f}, in};
        compare("layer_norm 7x77", run_ln, &c, 7 * 77);
        free(in);
    }
    attention("attention self 37 tokens, 2x40", 1, 37, 37, 2, 40, 0);
    attention("attention cross 20x77, batch 2, 2x8", 2, 20, 77, 2, 8, 0);
    attention("attention causal 13, 4x16", 1, 13, 13, 4, 16, 1);
    {
        const size_t n = 3000;
        float *a = rnd(n, -4, 4), *b = rnd(n, -4, 4);
        int32_t ids[2 * 5] = {3, 0, 9, 9, 1, 4, 2, 7, 8, 5};
        float *table = keep(rnd(10 * 24, -1, 1)), *pos = keep(rnd(5 * 24, -1, 1));
        float t[3] = {981.0f, 1.0f, 500.5f};
        misc("unary gelu", (misc_case){0, a, NULL, n, 0, n});
        misc("unary quick_gelu", (misc_case){1, a, NULL, n, 0, n});
        misc("unary silu", (misc_case){2, a, NULL, n, 0, n});
        misc("unary silu in place", (misc_case){13, a, NULL, n, 0, n});
        misc("geglu 30x50", (misc_case){3, a, NULL, 3000, 0, 1500, 30, 50});
        misc("upsample2x 6x(10x25)", (misc_case){4, a, NULL, 1500, 0, 6000, 6, 10, 25});
        misc("concat (2, 3+4, 50)", (misc_case){5, a, b, 300, 400, 700, 2, 3, 4, 50});
        misc("add", (misc_case){6, a, b, n, n, n});
        misc("transpose (3, 25, 40)", (misc_case){7, a, NULL, 3000, 0, 3000, 3, 25, 40});
        misc("transpose (1, 64, 46)", (misc_case){7, a, NULL, 2944, 0, 2944, 1, 64, 46});
        misc("add_channel (2, 6, 25)", (misc_case){8, a, b, 300, 12, 300, 2, 6, 25});
        misc("add_channel in place", (misc_case){12, a, b, 300, 12, 300, 2, 6, 25});
        misc("scale", (misc_case){9, a, NULL, n, 0, n, 0, 0, 0, 0, 0.18215f, -0.5f});
        misc_case e = {10, NULL, NULL, 0, 0, 2 * 5 * 24, 10, 2, 5, 24, 0, 0, ids, table, pos};
        misc("embedding + positions", e);
        e.pos = NULL;
        misc("embedding, no positions", e);
        misc("timestep_embedding 3x33 flip", (misc_case){11, t, NULL, 0, 0, 3 * 33, 3, 33, 1, 0, 1.0f});
        misc("timestep_embedding 3x32 shift 1", (misc_case){11, t, NULL, 0, 0, 3 * 32, 3, 32, 0, 0, 1.0f});
        free(a);
        free(b);
    }
    errors();
    arena_grow();
    g_gpu->ops->destroy(g_gpu);
    g_cpu->ops->destroy(g_cpu);
    for (int i = 0; i < g_nkeep; i++) free(g_keep[i]);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
