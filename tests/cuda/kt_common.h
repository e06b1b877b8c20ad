/*
 * kt_common.h - helpers shared by the kernel tests in tests/cuda: random
 * inputs, device buffers of a dk_dtype (poisoned before use), the relative
 * error ||out - ref|| / ||ref|| and its tolerance by dtype, and the pass/fail
 * bookkeeping. The tests compile against the SIMT emulator (kernels/emu)
 * with g++, and - except test_emu and test_planted, which test the emulator
 * itself - also with nvcc against the real runtime, where they run on the
 * GPU or exit 77 (skipped) when there is none.
 */
#ifndef DIFFUSE_KT_COMMON_H
#define DIFFUSE_KT_COMMON_H

#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vector>

static int kt_failures = 0, kt_checks = 0;

/* splitmix64 stream; normal() by Box-Muller. Fixed seeds keep failures reproducible. */
struct kt_rng {
    uint64_t s;
    explicit kt_rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uniform() { return (double)(next() >> 11) * (1.0 / 9007199254740992.0); }
    float normal() {
        const double u = uniform() + 1e-300, v = uniform();
        return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
    }
    std::vector<float> normals(size_t n, float scale = 1.0f) {
        std::vector<float> x(n);
        for (float &e : x) e = scale * normal();
        return x;
    }
};

static inline const char *kt_dtype_name(dk_dtype t) { return t == DK_F32 ? "f32" : t == DK_F16 ? "f16" : "bf16"; }
static inline size_t kt_dtype_size(dk_dtype t) { return t == DK_F32 ? 4 : 2; }
/* ||out - ref|| / ||ref|| limits (issue 7): fp16/bf16 1e-2, fp32 1e-5. */
static inline double kt_tolerance(dk_dtype t) { return t == DK_F32 ? 1e-5 : 1e-2; }

static inline float kt_round(float v, dk_dtype t) {
    if (t == DK_F16) return __half2float(__float2half_rn(v));
    if (t == DK_BF16) return __bfloat162float(__float2bfloat16_rn(v));
    return v;
}
/* The values the kernel sees once @x is stored as @t. */
static inline std::vector<float> kt_rounded(std::vector<float> x, dk_dtype t) {
    for (float &e : x) e = kt_round(e, t);
    return x;
}

/* Device buffer of @n elements of @t, filled with 0xff (NaN in every dtype). */
static inline void *kt_alloc(size_t n, dk_dtype t) {
    void *p = nullptr;
    if (cudaMalloc(&p, n * kt_dtype_size(t)) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc of %zu bytes failed\n", n * kt_dtype_size(t));
        exit(2);
    }
    cudaMemset(p, 0xff, n * kt_dtype_size(t));
    return p;
}

static inline void kt_upload(void *dst, const std::vector<float> &x, dk_dtype t) {
    std::vector<uint8_t> bytes(x.size() * kt_dtype_size(t));
    for (size_t i = 0; i < x.size(); i++) {
        if (t == DK_F32) {
            memcpy(&bytes[4 * i], &x[i], 4);
        } else {
            if (t == DK_F16) {
                const __half h = __float2half_rn(x[i]);
                memcpy(&bytes[2 * i], &h, 2);
            } else {
                const __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
                memcpy(&bytes[2 * i], &h, 2);
            }
        }
    }
    cudaMemcpy(dst, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
}

/* Device buffer holding @x as @t. */
static inline void *kt_to_device(const std::vector<float> &x, dk_dtype t) {
    void *p = kt_alloc(x.size(), t);
    kt_upload(p, x, t);
    return p;
}

static inline std::vector<float> kt_download(const void *src, size_t n, dk_dtype t) {
    std::vector<uint8_t> bytes(n * kt_dtype_size(t));
    cudaMemcpy(bytes.data(), src, bytes.size(), cudaMemcpyDeviceToHost);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; i++) {
        if (t == DK_F32) {
            memcpy(&x[i], &bytes[4 * i], 4);
        } else {
            if (t == DK_F16) {
                __half h;
                memcpy(&h, &bytes[2 * i], 2);
                x[i] = __half2float(h);
            } else {
                __nv_bfloat16 h;
                memcpy(&h, &bytes[2 * i], 2);
                x[i] = __bfloat162float(h);
            }
        }
    }
    return x;
}

/* ||out - ref|| / ||ref||; any non-finite output makes it infinite. */
static inline double kt_rel_err(const std::vector<float> &out, const std::vector<double> &ref) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < out.size(); i++) {
        if (!isfinite(out[i])) return INFINITY;
        num += (out[i] - ref[i]) * (out[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

/* Records one comparison; prints it when it fails or when KT_VERBOSE is set. */
static inline bool kt_expect_close(const char *what, const std::vector<float> &out, const std::vector<double> &ref,
                                   dk_dtype t) {
    kt_checks++;
    const double e = kt_rel_err(out, ref), tol = kt_tolerance(t);
    const bool ok = e <= tol;
    if (!ok) kt_failures++;
    if (!ok || getenv("KT_VERBOSE")) printf("%s %s: rel err %.3g (tol %.0e)\n", ok ? "ok  " : "FAIL", what, e, tol);
    return ok;
}

static inline bool kt_expect(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool kt_expect(bool cond, const char *fmt, ...) {
    kt_checks++;
    if (!cond) {
        kt_failures++;
        va_list ap;
        va_start(ap, fmt);
        printf("FAIL ");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
    return cond;
}

/* A launcher's status, then (on a GPU) the kernel's own: errors are asynchronous there. */
static inline bool kt_launch_ok(int rc, const char *what) {
    if (rc == cudaSuccess) rc = (int)cudaDeviceSynchronize();
#ifdef DK_EMU
    const char *detail = emu_last_error_message();
#else
    const char *detail = "";
#endif
    return kt_expect(rc == cudaSuccess, "%s: launch returned %d (%s) %s", what, rc, cudaGetErrorString((cudaError_t)rc),
                     detail);
}

/* Under nvcc: exit 77 (meson's "skipped") when there is no GPU. */
static inline void kt_require_device(void) {
#ifndef DK_EMU
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("no CUDA device: skipped\n");
        exit(77);
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) printf("device: %s\n", prop.name);
#else
    printf("device: SIMT emulator\n");
#endif
}

static inline double kt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Summary line and exit status. */
static inline int kt_finish(const char *name, double t0) {
    printf("%s: %d checks, %d failed, %.2f s\n", name, kt_checks, kt_failures, kt_now() - t0);
    return kt_failures ? 1 : 0;
}

#endif /* DIFFUSE_KT_COMMON_H */
