/*
 * sampler_step.cu - one sampler step over the latents in one pass: the
 * classifier-free-guidance combine of the model outputs, the scheduler's
 * update x_next = a x + b m + c noise + sum_j d_j hist_j, and optionally the
 * history entry of this step (aux = aux_a x + aux_b m, e.g. the denoised x0)
 * - instead of three or four elementwise kernels, each reading the latents.
 * Latents, noise and history are fp32; the model output fp32, fp16 or bf16.
 * Which coefficients give which sampler: kernels.h and docs/cuda.md.
 */
#include "dk_cuda.cuh"

namespace {

constexpr int kThreads = 256;

template <class M> __global__ void sampler_step_kernel(dk_sampler_step_params p) {
    const M *uncond = static_cast<const M *>(p.uncond), *cond = static_cast<const M *>(p.cond);
    const size_t stride = (size_t)gridDim.x * kThreads;
    for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < p.n; i += stride) {
        const float u = dk::to_f32(uncond[i]);
        const float m = cond ? u + p.guidance * (dk::to_f32(cond[i]) - u) : u;
        const float x = p.x[i];
        float y = p.a * x + p.b * m;
        if (p.noise) y += p.c * p.noise[i];
        for (int j = 0; j < DK_SAMPLER_HIST; j++)
            if (p.hist[j]) y += p.d[j] * p.hist[j][i];
        // Every input of element i is read above: aux may overwrite a history
        // buffer and x_out the latents in place.
        if (p.aux) p.aux[i] = p.aux_a * x + p.aux_b * m;
        p.x_out[i] = y;
    }
}

template <class M> int launch(const dk_sampler_step_params *p, cudaStream_t stream) {
    const size_t blocks = (p->n + kThreads - 1) / kThreads;
    DK_LAUNCH((sampler_step_kernel<M>), dim3(blocks < 4096 ? (unsigned)blocks : 4096u), dim3(kThreads), 0, stream, *p);
    return (int)cudaGetLastError();
}

} // namespace

extern "C" int dk_sampler_step(const dk_sampler_step_params *p, cudaStream_t stream) {
    DK_CHECK_ARG(p && p->x && p->uncond && p->x_out && p->n > 0);
    DK_CHECK_ARG(p->noise || p->c == 0.0f);
    DK_CHECK_ARG(!p->aux || p->aux != p->x_out);
    for (int j = 0; j < DK_SAMPLER_HIST; j++) DK_CHECK_ARG(p->hist[j] || p->d[j] == 0.0f);
    switch (p->model_dtype) {
    case DK_F32: return launch<float>(p, stream);
    case DK_F16: return launch<__half>(p, stream);
    case DK_BF16: return launch<__nv_bfloat16>(p, stream);
    }
    return (int)cudaErrorInvalidValue;
}
