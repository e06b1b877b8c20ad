/*
 * guidance.h - classifier-free guidance as StableDiffusionPipeline applies
 * it between the UNet and the sampler step: the guided combination of the
 * unconditional and conditional predictions, and guidance_rescale (the
 * std-ratio rescale of "Common Diffusion Noise Schedules and Sample Steps
 * are Flawed", section 3.4) mixed in by a factor phi.
 */
#ifndef DIFFUSE_SCHED_GUIDANCE_H
#define DIFFUSE_SCHED_GUIDANCE_H

#include "common.h"

#include <stddef.h>

/* out = uncond + scale * (cond - uncond), n floats, float32 as torch does
 * it. @out may alias either input. */
void guidance_cfg_combine(const float *uncond, const float *cond, float scale, size_t n, float *out);

/*
 * guidance_rescale() - rescale_noise_cfg: for each of @batch samples of
 * @per_sample floats, guided *= std(cond) / std(guided) (unbiased std over
 * the sample), then guided = phi * rescaled + (1 - phi) * guided, in place.
 * @phi 0 leaves @guided unchanged.
 * @return DIFFUSE_ERR_INVALID_ARGUMENT for NULL, per_sample < 2, or phi
 * outside [0, 1] or NaN.
 */
diffuse_status guidance_rescale(float *guided, const float *cond, size_t batch, size_t per_sample, double phi,
                                df_error *err);

#endif /* DIFFUSE_SCHED_GUIDANCE_H */
