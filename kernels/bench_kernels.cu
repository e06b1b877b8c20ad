/*
 * bench_kernels.cu - microbenchmarks of the kernels in kernels/ (dk_bench):
 * attention TFLOP/s at Stable Diffusion shapes against the measured
 * tensor-core peak (a loop of mma.sync), and group norm, layer norm, GEGLU
 * and the sampler step in GB/s against the measured device-to-device copy
 * bandwidth. Correctness is tests/cuda's job; this only times.
 * `dk_bench --smoke` runs tiny shapes once: tests/cuda runs it that way on
 * the SIMT emulator, to keep the benchmark itself working without a GPU.
 */
#include "dk_cuda.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

namespace {

bool g_smoke;

void check(int rc, const char *what) {
    if (rc != (int)cudaSuccess) {
        fprintf(stderr, "dk_bench: %s failed: %s\n", what, cudaGetErrorString((cudaError_t)rc));
        exit(1);
    }
}

size_t dtype_size(dk_dtype t) { return t == DK_F32 ? 4 : 2; }

/* Device buffer of @n elements of @t with values in [-1, 1) (an LCG: the
 * values do not matter for timing, only that they are finite). */
void *random_buffer(size_t n, dk_dtype t) {
    std::vector<unsigned char> host(n * dtype_size(t));
    unsigned s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        const float v = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
        if (t == DK_F32) {
            memcpy(&host[4 * i], &v, 4);
        } else {
            const unsigned short u =
                t == DK_F16 ? __half_as_ushort(__float2half_rn(v)) : __bfloat16_as_ushort(__float2bfloat16_rn(v));
            memcpy(&host[2 * i], &u, 2);
        }
    }
    void *d = nullptr;
    check((int)cudaMalloc(&d, host.size()), "cudaMalloc");
    check((int)cudaMemcpy(d, host.data(), host.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
    return d;
}

/* Milliseconds per call of @f (one warm-up call first). */
template <class F> double time_ms(F f, int iters) {
    if (g_smoke) iters = 1;
    check(f(), "warm-up launch");
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, nullptr);
    for (int i = 0; i < iters; i++) check(f(), "launch");
    cudaEventRecord(b, nullptr);
    cudaEventSynchronize(b);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / iters;
}

/* --- tensor-core peak: every warp runs a chain of independent MMAs ------- */

constexpr int kPeakChains = 8; // independent accumulators per warp: enough to cover the MMA latency

template <class T> __global__ void mma_peak_kernel(float *out, int iters) {
    uint32_t a[4], b[2];
    const uint32_t one = dk::pack2_f32<T>(1.0f / 1024.0f, 1.0f / 1024.0f);
    for (int i = 0; i < 4; i++) a[i] = one;
    b[0] = b[1] = one;
    float acc[kPeakChains][4] = {};
    for (int it = 0; it < iters; it++)
        for (int c = 0; c < kPeakChains; c++) dk::mma_m16n8k16<T>(acc[c], a, b);
    float s = 0.0f;
    for (int c = 0; c < kPeakChains; c++) s += acc[c][0] + acc[c][1] + acc[c][2] + acc[c][3];
    if (s == -1.0f) out[0] = s; // never true; keeps the loop alive
}

double mma_peak_tflops(dk_dtype t, float *scratch) {
    const int blocks = g_smoke ? 1 : 132 * 8, threads = 128, iters = g_smoke ? 2 : 4096;
    const double ms = time_ms(
        [&] {
            if (t == DK_F16)
                DK_LAUNCH((mma_peak_kernel<__half>), dim3(blocks), dim3(threads), 0, nullptr, scratch, iters);
            else
                DK_LAUNCH((mma_peak_kernel<__nv_bfloat16>), dim3(blocks), dim3(threads), 0, nullptr, scratch, iters);
            return (int)cudaGetLastError();
        },
        5);
    const double flops = 2.0 * 16 * 8 * 16 * kPeakChains * (double)iters * blocks * (threads / 32);
    return flops / (ms * 1e-3) / 1e12;
}

/* --- the kernels ------------------------------------------------------------ */

void bench_attention(dk_dtype t, int batch, int heads, int sq, int sk, int hd, double peak) {
    if (g_smoke) { // one (batch, head), at most 2 query blocks and 2-3 key tiles
        batch = heads = 1;
        sq = sq < 70 ? sq : 70;
        sk = sk < 77 ? sk : 77;
    }
    const int width = heads * hd;
    void *q = random_buffer((size_t)batch * sq * width, t), *k = random_buffer((size_t)batch * sk * width, t);
    void *v = random_buffer((size_t)batch * sk * width, t), *o = random_buffer((size_t)batch * sq * width, t);
    dk_attention_params p = {};
    p.q = q;
    p.k = k;
    p.v = v;
    p.out = o;
    p.batch = batch;
    p.sq = sq;
    p.sk = sk;
    p.heads = heads;
    p.head_dim = hd;
    p.q_stride = p.kv_stride = width;
    p.scale = 1.0f / sqrtf((float)hd);
    p.dtype = t;
    const double ms = time_ms([&] { return dk_attention(&p, nullptr); }, 20);
    const double tflops = 4.0 * batch * heads * (double)sq * sk * hd / (ms * 1e-3) / 1e12;
    printf("attention %-4s b=%d heads=%d sq=%-5d sk=%-5d hd=%-3d %9.3f ms %7.1f TFLOP/s", t == DK_F16 ? "f16" : "bf16",
           batch, heads, sq, sk, hd, ms, tflops);
    if (peak > 0.0) printf(" (%4.1f%% of mma peak)", 100.0 * tflops / peak);
    printf("\n");
    cudaFree(q);
    cudaFree(k);
    cudaFree(v);
    cudaFree(o);
}

void report_bw(const char *what, double ms, double bytes, double copy_gbs) {
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    printf("%-52s %9.3f ms %7.1f GB/s (%4.1f%% of copy)\n", what, ms, gbs, 100.0 * gbs / copy_gbs);
}

void bench_group_norm(dk_dtype t, int n, int c, int hw, double copy_gbs) {
    if (g_smoke) {
        n = 1;
        c = 64;
        hw = 64;
    }
    void *x = random_buffer((size_t)n * c * hw, t), *y = random_buffer((size_t)n * c * hw, t);
    float *gamma = (float *)random_buffer((size_t)c, DK_F32), *beta = (float *)random_buffer((size_t)c, DK_F32);
    const dk_group_norm_params p = {x, gamma, beta, y, n, c, hw, 32, 1e-5f, 1, t};
    const double ms = time_ms([&] { return dk_group_norm(&p, nullptr); }, 50);
    char what[96];
    snprintf(what, sizeof what, "group_norm+silu %s (%d, %d, %d)",
             t == DK_F32   ? "f32"
             : t == DK_F16 ? "f16"
                           : "bf16",
             n, c, hw);
    report_bw(what, ms, 2.0 * n * c * hw * dtype_size(t), copy_gbs); // one read, one write
    cudaFree(x);
    cudaFree(y);
    cudaFree(gamma);
    cudaFree(beta);
}

void bench_layer_norm_geglu(dk_dtype t, int m, int c, double copy_gbs) {
    if (g_smoke) m = 16;
    void *x = random_buffer((size_t)m * 8 * c, t), *y = random_buffer((size_t)m * 8 * c, t);
    float *gamma = (float *)random_buffer((size_t)c, DK_F32), *beta = (float *)random_buffer((size_t)c, DK_F32);
    const dk_layer_norm_params p = {x, gamma, beta, y, m, c, 1e-5f, t};
    double ms = time_ms([&] { return dk_layer_norm(&p, nullptr); }, 50);
    char what[96];
    snprintf(what, sizeof what, "layer_norm %s (%d, %d)", t == DK_F16 ? "f16" : "bf16", m, c);
    report_bw(what, ms, 2.0 * m * c * dtype_size(t), copy_gbs);
    // GEGLU on SD's feed-forward: (M, 2 * 4C) -> (M, 4C)
    ms = time_ms([&] { return dk_geglu(x, y, m, 4 * c, t, nullptr); }, 50);
    snprintf(what, sizeof what, "geglu %s (%d, %d)", t == DK_F16 ? "f16" : "bf16", m, 4 * c);
    report_bw(what, ms, 3.0 * m * 4 * c * dtype_size(t), copy_gbs);
    cudaFree(x);
    cudaFree(y);
    cudaFree(gamma);
    cudaFree(beta);
}

void bench_sampler_step(size_t n, double copy_gbs) {
    if (g_smoke) n = 1000;
    float *x = (float *)random_buffer(n, DK_F32), *noise = (float *)random_buffer(n, DK_F32);
    void *un = random_buffer(n, DK_F16), *co = random_buffer(n, DK_F16);
    dk_sampler_step_params p = {};
    p.x = x;
    p.uncond = un;
    p.cond = co;
    p.model_dtype = DK_F16;
    p.guidance = 7.5f;
    p.noise = noise;
    p.a = 1.0f;
    p.b = -0.1f;
    p.c = 0.05f;
    p.x_out = x;
    p.n = n;
    const double ms = time_ms([&] { return dk_sampler_step(&p, nullptr); }, 100);
    char what[96];
    snprintf(what, sizeof what, "sampler_step cfg+noise, f16 model out (%zu)", n);
    report_bw(what, ms, (double)n * (4 + 2 + 2 + 4 + 4), copy_gbs); // x, uncond, cond, noise in; x out
    cudaFree(x);
    cudaFree(noise);
    cudaFree(un);
    cudaFree(co);
}

} // namespace

int main(int argc, char **argv) {
    g_smoke = argc > 1 && strcmp(argv[1], "--smoke") == 0;
#ifdef DK_EMU
    printf("device: SIMT emulator (timings mean nothing here)\n");
#else
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
#endif
    // Copy bandwidth: device-to-device cudaMemcpy of 256 MiB (counted as read + write).
    const size_t copy_bytes = g_smoke ? 4096 : (size_t)256 << 20;
    void *src = random_buffer(copy_bytes / 4, DK_F32), *dst = random_buffer(copy_bytes / 4, DK_F32);
    const double copy_ms = time_ms([&] { return (int)cudaMemcpy(dst, src, copy_bytes, cudaMemcpyDeviceToDevice); }, 20);
    const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
    printf("copy bandwidth: %.1f GB/s\n", copy_gbs);
    cudaFree(src);
    cudaFree(dst);

    float *scratch = (float *)random_buffer(1, DK_F32);
    const double peak16 = mma_peak_tflops(DK_F16, scratch), peak_bf = mma_peak_tflops(DK_BF16, scratch);
    printf("mma.sync m16n8k16 peak: f16 %.1f TFLOP/s, bf16 %.1f TFLOP/s\n", peak16, peak_bf);
    cudaFree(scratch);

    // SD 1.5 at 512x512 (64x64 latents): self-attention 4096 tokens x 8 heads
    // of 40, then 1024 x 80, 256 x 160; cross-attention with 77 text tokens;
    // SD 2.x / XL use head dim 64.
    bench_attention(DK_F16, 2, 8, 4096, 4096, 40, peak16);
    bench_attention(DK_F16, 2, 8, 4096, 4096, 64, peak16);
    bench_attention(DK_BF16, 2, 8, 4096, 4096, 64, peak_bf);
    bench_attention(DK_F16, 2, 8, 1024, 1024, 80, peak16);
    bench_attention(DK_F16, 2, 8, 256, 256, 160, peak16);
    bench_attention(DK_F16, 2, 8, 4096, 77, 40, peak16);

    bench_group_norm(DK_F16, 2, 320, 4096, copy_gbs);
    bench_group_norm(DK_F32, 2, 320, 4096, copy_gbs);
    bench_layer_norm_geglu(DK_F16, 2 * 4096, 320, copy_gbs);
    bench_sampler_step((size_t)2 * 4 * 64 * 64, copy_gbs);
    bench_sampler_step((size_t)16 << 20, copy_gbs); // large enough to measure bandwidth, not launch latency
    return 0;
}
