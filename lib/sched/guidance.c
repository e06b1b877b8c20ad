/*
 * guidance.c - classifier-free guidance combine and guidance_rescale (see
 * guidance.h). Standard deviations are accumulated in double, as torch's
 * CPU std kernel does for float32 input.
 */
#include "sched/guidance.h"

#include <math.h>

/* Bit-exact float32 needs every multiply and add rounded on its own:
 * GCC in ISO C mode never fuses them; clang would, on FMA targets. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

void guidance_cfg_combine(const float *uncond, const float *cond, float scale, size_t n, float *out) {
    for (size_t j = 0; j < n; j++) {
        float u = uncond[j];
        out[j] = u + scale * (cond[j] - u);
    }
}

/* Unbiased (n - 1) standard deviation of @n floats, two-pass in double. */
static float std_unbiased(const float *x, size_t n) {
    double mean = 0.0, ss = 0.0;
    for (size_t j = 0; j < n; j++) mean += x[j];
    mean /= (double)n;
    for (size_t j = 0; j < n; j++) {
        double d = x[j] - mean;
        ss += d * d;
    }
    return (float)sqrt(ss / (double)(n - 1));
}

diffuse_status guidance_rescale(float *guided, const float *cond, size_t batch, size_t per_sample, double phi,
                                df_error *err) {
    if (!guided || !cond || per_sample < 2)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "guidance_rescale: NULL input or fewer than 2 values");
    if (!(phi >= 0.0 && phi <= 1.0))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "guidance_rescale must be in [0, 1], got %g", phi);
    if (phi == 0.0) return DIFFUSE_OK;
    float mix = (float)phi, keep = (float)(1.0 - phi);
    for (size_t b = 0; b < batch; b++) {
        float *g = guided + b * per_sample;
        float ratio = std_unbiased(cond + b * per_sample, per_sample) / std_unbiased(g, per_sample);
        for (size_t j = 0; j < per_sample; j++) g[j] = mix * (g[j] * ratio) + keep * g[j];
    }
    return DIFFUSE_OK;
}
