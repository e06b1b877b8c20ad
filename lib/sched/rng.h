/*
 * rng.h - a random-number generator that reproduces torch's CPU generator
 * bit for bit: torch.Generator("cpu").manual_seed(seed) followed by any
 * sequence of torch.randn / torch.rand calls on float32 tensors gives the
 * same numbers here, so a seed gives the image diffusers gives.
 *
 * torch draws normals two ways. Tensors of 16 or more elements take 16
 * uniforms at a time and Box-Muller them in float32 with vectorised
 * log/sincos (the "avx_mathfun" polynomials on any x86-64 CPU with AVX2;
 * the C library's logf/sinf/cosf where torch runs without SIMD); smaller
 * tensors take one double-precision Box-Muller pair per two elements and
 * cache the second value of a pair in the generator for the next draw.
 * Both are reproduced, including the cache.
 */
#ifndef DIFFUSE_SCHED_RNG_H
#define DIFFUSE_SCHED_RNG_H

#include <stddef.h>
#include <stdint.h>

#define DF_RNG_MT_N 624

/* Which float32 math torch's randn uses for tensors of >= 16 elements.
 * SIMD is plain float arithmetic here, so it gives the same numbers on
 * every machine this library runs on; LIBM matches torch only where both
 * use the same C library (torch on ARM or on x86 without AVX2). */
typedef enum df_rng_normal_path {
    DF_RNG_NORMAL_SIMD = 0, /* torch with CPU capability AVX2 or AVX512 (any modern x86-64) */
    DF_RNG_NORMAL_LIBM = 1  /* torch with CPU capability DEFAULT: the C library's logf/cosf/sinf */
} df_rng_normal_path;

/* One generator: mt19937 state plus torch's cached second normal. Plain
 * data: copy it to fork a stream. */
typedef struct df_rng {
    uint32_t mt[DF_RNG_MT_N]; /* mt19937 state words */
    uint32_t mt_next;         /* index of the next state word to temper */
    uint64_t seed;            /* as given to df_rng_seed */
    int has_cached_normal;    /* torch's next_double_normal_sample is set */
    double cached_normal;     /* the sine half of the last double Box-Muller pair */
    df_rng_normal_path path;  /* default DF_RNG_NORMAL_SIMD */
} df_rng;

/* Seeds like torch.Generator("cpu").manual_seed(seed): mt19937 initialised
 * with the low 32 bits of @seed, no cached normal. Keeps r->path. */
void df_rng_seed(df_rng *r, uint64_t seed);

/* Initialises @r (path = DF_RNG_NORMAL_SIMD) and seeds it. */
void df_rng_init(df_rng *r, uint64_t seed);

/* The next 32 raw bits of mt19937 (torch's generator->random()). */
uint32_t df_rng_u32(df_rng *r);

/* torch's generator->random64(): two 32-bit draws, the first is the high half. */
uint64_t df_rng_u64(df_rng *r);

/* Fills @out with what torch.randn(n, generator=g, dtype=torch.float32)
 * returns for a contiguous tensor of @n elements (any shape with that
 * numel), advancing the stream exactly as torch does. n == 0 draws nothing. */
void df_rng_randn(df_rng *r, float *out, size_t n);

/* Fills @out with what torch.rand(n, generator=g, dtype=torch.float32)
 * returns: (32-bit draw & 0xffffff) * 2^-24 per element. */
void df_rng_rand(df_rng *r, float *out, size_t n);

#endif /* DIFFUSE_SCHED_RNG_H */
