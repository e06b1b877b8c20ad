/*
 * cpu_timestep.c - sinusoidal timestep embedding, as diffusers'
 * get_timestep_embedding computes it. diffusers keeps the exponent, the
 * frequencies and the arguments as float32 tensors; rounding them the same
 * way here is what makes the embedding of t = 999 agree with diffusers to
 * ~1e-7 instead of ~1e-4 (sin of a float32 argument near 1000). exp, sin and
 * cos themselves are evaluated in float64 and rounded once.
 */
#include "cpu_internal.h"

#include <math.h>

static diffuse_status timestep_check(bk_backend *bk, const bk_timestep_args *a) {
    if (!a || !a->t || !a->out)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT, "timestep_embedding: NULL %s",
                       !a ? "args" : !a->t ? "timesteps" : "output");
    if (a->n <= 0 || a->dim <= 0)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "timestep_embedding: dims must be positive (n=%d dim=%d)", a->n, a->dim);
    if (!(a->max_period > 0.0f) || !isfinite(a->max_period) || !isfinite(a->scale) ||
        !isfinite(a->downscale_freq_shift))
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "timestep_embedding: max_period %g must be positive, scale %g and shift %g finite",
                       (double)a->max_period, (double)a->scale, (double)a->downscale_freq_shift);
    if (a->dim / 2 > 0 && (float)(a->dim / 2) - a->downscale_freq_shift == 0.0f)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "timestep_embedding: half dim %d minus shift %g is zero", a->dim / 2,
                       (double)a->downscale_freq_shift);
    return DIFFUSE_OK;
}

diffuse_status cpu_timestep_embedding(bk_backend *bk, const bk_timestep_args *a) {
    diffuse_status st = timestep_check(bk, a);
    if (st != DIFFUSE_OK) return st;
    const int half = a->dim / 2;
    /* float32 as torch: exponent = (-ln(max_period) * arange(half)) / (half - shift) */
    const float neg_log = (float)-log((double)a->max_period);
    const float denom = (float)((double)half - (double)a->downscale_freq_shift);
    const int sin_at = a->flip_sin_to_cos ? half : 0, cos_at = a->flip_sin_to_cos ? 0 : half;
    for (int i = 0; i < half; i++) {
        const float exponent = (neg_log * (float)i) / denom;
        const float freq = (float)exp((double)exponent);
        for (int r = 0; r < a->n; r++) {
            const float arg = a->scale * (a->t[r] * freq); /* (N, half) */
            float *row = a->out + (size_t)r * a->dim;
            row[sin_at + i] = (float)sin((double)arg);
            row[cos_at + i] = (float)cos((double)arg);
        }
    }
    if (a->dim % 2)
        for (int r = 0; r < a->n; r++) a->out[(size_t)r * a->dim + a->dim - 1] = 0.0f;
    return DIFFUSE_OK;
}
