/*
 * timestep_embedding.cu - sinusoidal timestep embedding (diffusers'
 * get_timestep_embedding), the kernel behind bk_ops.timestep_embedding.
 * It rounds as the CPU backend does (lib/cpu/cpu_timestep.c): exponent,
 * frequency and argument in float32, exp/sin/cos in float64 rounded once,
 * which is what keeps t = 999 within ~1e-7 of diffusers. (N, dim) is at
 * most a few thousand values, so the float64 math costs nothing.
 */
#include "dk_cuda.cuh"

#include <math.h>

namespace {

constexpr int kThreads = 256;

/* @neg_log = (float)-ln(max_period), @denom = (float)(half - shift): computed on the host as the CPU backend does. */
__global__ void timestep_kernel(dk_timestep_params p, float neg_log, float denom) {
    const int half = p.dim / 2;
    const int i = blockIdx.x * kThreads + threadIdx.x; // over (N, half)
    const int sin_at = p.flip_sin_to_cos ? half : 0, cos_at = p.flip_sin_to_cos ? 0 : half;
    if (i < p.n * half) {
        const int r = i / half, f = i % half;
        const float exponent = (neg_log * (float)f) / denom;
        const float freq = (float)exp((double)exponent);
        const float arg = p.scale * (p.t[r] * freq);
        float *row = p.out + (size_t)r * p.dim;
        row[sin_at + f] = (float)sin((double)arg);
        row[cos_at + f] = (float)cos((double)arg);
    }
    if (p.dim % 2 && i < p.n) p.out[(size_t)i * p.dim + p.dim - 1] = 0.0f;
}

} // namespace

extern "C" int dk_timestep_embedding(const dk_timestep_params *p, cudaStream_t stream) {
    DK_CHECK_ARG(p && p->t && p->out && p->n > 0 && p->dim > 0);
    DK_CHECK_ARG(p->max_period > 0.0f && isfinite(p->max_period) && isfinite(p->scale));
    const int half = p->dim / 2;
    const float neg_log = (float)-log((double)p->max_period);
    const float denom = (float)((double)half - (double)p->downscale_freq_shift);
    DK_CHECK_ARG(half == 0 || denom != 0.0f);
    const int work = p->n * (half > 1 ? half : 1);
    DK_LAUNCH(timestep_kernel, dim3(dk::ceil_div(work, kThreads)), dim3(kThreads), 0, stream, *p, neg_log, denom);
    return (int)cudaGetLastError();
}
