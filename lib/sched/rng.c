/*
 * rng.c - torch-compatible mt19937 and normal/uniform sampling (see rng.h).
 * The float32 arithmetic below follows torch's kernels operation by
 * operation, so results are bit-identical, not merely close; the comments
 * name the torch code each piece mirrors.
 */
#include "sched/rng.h"

#include <math.h>
#include <string.h>

/* Bit-exact float32 needs every multiply and add rounded on its own:
 * GCC in ISO C mode never fuses them; clang would, on FMA targets. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ------------------------------------------------------------------------ */
/* mt19937 (torch's at::mt19937 is the standard generator)                   */
/* ------------------------------------------------------------------------ */

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

void df_rng_seed(df_rng *r, uint64_t seed) {
    /* at::mt19937::init_with_uint32: only the low 32 bits of the seed count. */
    r->seed = seed;
    r->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t j = 1; j < DF_RNG_MT_N; j++)
        r->mt[j] = 1812433253u * (r->mt[j - 1] ^ (r->mt[j - 1] >> 30)) + j;
    r->mt_next = DF_RNG_MT_N;
    r->has_cached_normal = 0;
    r->cached_normal = 0.0;
}

void df_rng_init(df_rng *r, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->path = DF_RNG_NORMAL_SIMD;
    df_rng_seed(r, seed);
}

static void mt_twist(df_rng *r) {
    uint32_t *mt = r->mt;
    for (int i = 0; i < DF_RNG_MT_N; i++) {
        uint32_t y = (mt[i] & MT_UPPER) | (mt[(i + 1) % DF_RNG_MT_N] & MT_LOWER);
        mt[i] = mt[(i + MT_M) % DF_RNG_MT_N] ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
    }
    r->mt_next = 0;
}

uint32_t df_rng_u32(df_rng *r) {
    if (r->mt_next >= DF_RNG_MT_N) mt_twist(r);
    uint32_t y = r->mt[r->mt_next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t df_rng_u64(df_rng *r) {
    uint64_t hi = df_rng_u32(r);
    uint64_t lo = df_rng_u32(r);
    return (hi << 32) | lo;
}

/* at::uniform_real_distribution<float>(0, 1): 24 random bits, exact in float. */
static float uniform_f32(df_rng *r) {
    return (float)(df_rng_u32(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* at::uniform_real_distribution<double>(0, 1): 53 random bits of random64(). */
static double uniform_f64(df_rng *r) {
    return (double)(df_rng_u64(r) & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* ------------------------------------------------------------------------ */
/* torch's SIMD log and sincos (aten/src/ATen/native/cpu/avx_mathfun.h,     */
/* Cephes polynomials by way of Julien Pommier's sse_mathfun, zlib licence) */
/* evaluated one lane at a time. torch compiles those intrinsics with FMA   */
/* contraction; each fmaf below sits where the compiler fused a multiply    */
/* into the following add, which is what makes the results bit-identical.   */
/* ------------------------------------------------------------------------ */

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* log256_ps for one lane; only called with x in (0, 1]. */
static float simd_logf(float x) {
    const float min_norm = f32_from_bits(0x00800000u);
    if (!(x >= min_norm)) x = min_norm; /* cut off denormals (x is never NaN here) */
    uint32_t u = f32_bits(x);
    float e = (float)((int32_t)(u >> 23) - 0x7f);
    x = f32_from_bits((u & ~0x7f800000u) | f32_bits(0.5f));
    e = e + 1.0f;
    int below = x < 0.707106781186547524f; /* SQRTHF */
    float tmp = below ? x : 0.0f;
    x = x - 1.0f;
    e = e - (below ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, 1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, 2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, 3.3333331174E-1f);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f);
    y = fmaf(-z, 0.5f, y);
    x = x + y;
    return fmaf(e, 0.693359375f, x);
}

/* sincos256_ps for one lane; x >= 0 here (theta = 2*pi*u). */
static void simd_sincosf(float xin, float *s, float *c) {
    uint32_t sign_sin = f32_bits(xin) & 0x80000000u;
    float x = fabsf(xin);
    int32_t j = (int32_t)(x * 1.27323954473516f); /* 4/pi, truncation as cvttps */
    j = (j + 1) & ~1;
    float y = (float)j;
    uint32_t swap_sin = (uint32_t)(j & 4) << 29;
    int first_poly = (j & 2) == 0;
    x = fmaf(y, -0.78515625f, x); /* extended-precision reduction by pi/4 */
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    sign_sin ^= swap_sin;
    float z = x * x;
    float yc = 2.443315711809948E-005f;
    yc = fmaf(yc, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;
    float ys = -1.9515295891E-4f;
    ys = fmaf(ys, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    /* the masked selects of the vector code, with their exact +0.0 terms */
    float ysin2 = first_poly ? ys : 0.0f;
    float ysin1 = first_poly ? 0.0f : yc;
    float sv = ysin1 + ysin2;
    float cv = (yc - ysin1) + (ys - ysin2);
    *s = f32_from_bits(f32_bits(sv) ^ sign_sin);
    *c = f32_from_bits(f32_bits(cv) ^ sign_cos);
}

/* normal_fill_16_AVX2: 8 Box-Muller pairs from data[0..7] (radius) and
 * data[8..15] (angle), mean 0 and std 1 (the fmadd with them is exact). */
static void normal_fill_16_simd(float *data) {
    const float two_pi = (float)(2.0f * 3.14159265358979323846);
    for (int k = 0; k < 8; k++) {
        float u1 = 1.0f - data[k];
        float u2 = data[k + 8];
        float radius = sqrtf(-2.0f * simd_logf(u1));
        float s, c;
        simd_sincosf(two_pi * u2, &s, &c);
        data[k] = radius * c;
        data[k + 8] = radius * s;
    }
}

/* normal_fill_16 (the non-SIMD build): the angle is formed in double. */
static void normal_fill_16_libm(float *data) {
    for (int k = 0; k < 8; k++) {
        float u1 = 1.0f - data[k];
        float u2 = data[k + 8];
        float radius = sqrtf(-2.0f * logf(u1));
        float theta = (float)(2.0 * 3.14159265358979323846 * (double)u2);
        data[k] = radius * cosf(theta);
        data[k + 8] = radius * sinf(theta);
    }
}

/* ------------------------------------------------------------------------ */
/* randn and rand                                                            */
/* ------------------------------------------------------------------------ */

/* normal_fill / normal_fill_AVX2: all uniforms first, then groups of 16;
 * a ragged tail redraws 16 fresh uniforms for the last 16 slots. */
static void randn_fill(df_rng *r, float *out, size_t n) {
    void (*fill16)(float *) = r->path == DF_RNG_NORMAL_LIBM ? normal_fill_16_libm : normal_fill_16_simd;
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16) fill16(out + i);
    if (n % 16 != 0) {
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(r);
        fill16(tail);
    }
}

/* at::normal_distribution<double>: one double Box-Muller pair; the sine
 * half is kept in the generator and returned by the next call. */
static double normal_f64(df_rng *r) {
    if (r->has_cached_normal) {
        r->has_cached_normal = 0;
        return r->cached_normal;
    }
    double u1 = uniform_f64(r);
    double u2 = uniform_f64(r);
    double radius = sqrt(-2.0 * log1p(-u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    r->cached_normal = radius * sin(theta);
    r->has_cached_normal = 1;
    return radius * cos(theta);
}

void df_rng_randn(df_rng *r, float *out, size_t n) {
    if (n >= 16) {
        randn_fill(r, out, n);
        return;
    }
    for (size_t i = 0; i < n; i++) out[i] = (float)normal_f64(r);
}

void df_rng_rand(df_rng *r, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
}
