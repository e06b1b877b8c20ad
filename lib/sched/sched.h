/*
 * sched.h - the samplers: timestep and sigma schedules and the per-step
 * update of each diffusers scheduler the public enum diffuse_sampler names,
 * on plain float arrays. A pipeline builds one sampler per run from the
 * model's scheduler_config.json and drives it like diffusers' pipelines do:
 *
 *     sched_create(cfg, sampler, steps, numel, &s, &err);
 *     first = 0; x = randn * sched_init_noise_sigma(s);
 *         (img2img: sched_img2img_start(s, strength, &first, &err);
 *                   x = sched_add_noise(s, first, image_latents, randn))
 *     for (i = first; i < sched_num_evals(s); i++) {
 *         sched_scale_model_input(s, i, x, in, &err);
 *         eps = unet(in, sched_timestep(s, i))         (+ guidance.h)
 *         sched_step(s, i, eps, x, rngs, n_rngs, x, &err);
 *     }
 *
 * An "evaluation" is one model call: Heun makes two per step (its timestep
 * list repeats entries, as diffusers' does) and PNDM one extra at the start,
 * so loop over sched_num_evals(), not over the step count. Everything is
 * float32 arithmetic in the order diffusers' torch code does it, so
 * trajectories agree with diffusers to a few float32 ulps.
 */
#ifndef DIFFUSE_SCHED_SCHED_H
#define DIFFUSE_SCHED_SCHED_H

#include "common.h"
#include "sched/rng.h"

#include <stddef.h>

struct json_object;

/* One sampler run: schedule plus the multistep state. Not thread-safe;
 * one per run (create again, or sched_reset, to run again). */
typedef struct sched sched;

/*
 * sched_create() - builds the sampler @sampler for @steps inference steps
 * on latents of @numel floats (all images of the batch together).
 * @config: the parsed scheduler_config.json (an object; NaN/Infinity
 * values allowed). DIFFUSE_SAMPLER_DEFAULT runs the class the config names
 * (_class_name) with the config as is; any other sampler converts the
 * config the way diffusers' XScheduler.from_config(config) does: keys the
 * sampler knows are taken, unknown keys are ignored, missing keys get that
 * scheduler's defaults. Overrides per sampler: PNDM sets skip_prk_steps;
 * DPMPP_2M / DPMPP_2M_KARRAS set algorithm_type "dpmsolver++", solver_order 2
 * and use_karras_sigmas false / true; DPMPP_SDE sets algorithm_type
 * "sde-dpmsolver++" and solver_order 2 (DPM++ 2M SDE).
 * PNDM runs PLMS only: a config with skip_prk_steps false is run as if it
 * were true (the Runge-Kutta warm-up is not implemented).
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL, steps < 1 or
 * above num_train_timesteps, numel 0, unknown sampler);
 * DIFFUSE_ERR_MODEL_CONFIG (a key of the wrong type or value);
 * DIFFUSE_ERR_UNSUPPORTED (a scheduler class or option not implemented,
 * e.g. thresholding, learned variance, exponential or beta sigmas);
 * DIFFUSE_ERR_OUT_OF_MEMORY. Messages name the key.
 * Ownership: *out is freed with sched_free; @config is not kept.
 */
diffuse_status sched_create(const struct json_object *config, diffuse_sampler sampler, int steps, size_t numel,
                            sched **out, df_error *err);

/* Frees @s. Accepts NULL. */
void sched_free(sched *s);

/* Forgets the multistep state so the same schedule can run again. */
void sched_reset(sched *s);

/* Number of model evaluations of a full run (length of diffusers'
 * scheduler.timesteps after set_timesteps). */
size_t sched_num_evals(const sched *s);

/* diffusers' scheduler.order: 2 for Heun, 1 otherwise (evaluations per
 * step, for progress reporting: step = i / order). */
int sched_order(const sched *s);

/* The timestep passed to the UNet at evaluation @i (i < num_evals):
 * integers for DDIM/DDPM/PNDM/DPM/UniPC, fractional for the k-diffusion
 * samplers (their float32 value, widened). */
double sched_timestep(const sched *s, size_t i);

/* The sigma schedule diffusers keeps (scheduler.sigmas), or NULL for
 * DDIM/DDPM/PNDM; *n receives its length. */
const float *sched_sigmas(const sched *s, size_t *n);

/* Factor for the initial noise of a text-to-image run (diffusers'
 * init_noise_sigma): latents = randn * factor. */
float sched_init_noise_sigma(const sched *s);

/* Whether sched_step draws noise (DDPM, DDIM with eta > 0, Euler
 * ancestral, DPM++ SDE): the caller must pass generators. */
int sched_needs_rng(const sched *s);

/* diffusers' class name of what runs ("EulerDiscreteScheduler"). */
const char *sched_class_name(const sched *s);

/* DDIM's eta (default 0, as the pipelines pass it). Other samplers ignore it.
 * @return DIFFUSE_ERR_INVALID_ARGUMENT if eta is negative or not finite. */
diffuse_status sched_set_eta(sched *s, double eta, df_error *err);

/*
 * sched_img2img_start() - the first evaluation of an image-to-image run
 * with @strength in (0, 1], by diffusers' rule: init = min(int(steps *
 * strength), steps), t_start = steps - init, first = t_start * order.
 * Start the loop at *first and noise the image with sched_add_noise(s, *first, ...).
 * @return DIFFUSE_ERR_INVALID_ARGUMENT if strength is outside (0, 1] or
 * leaves no step to run.
 */
diffuse_status sched_img2img_start(const sched *s, double strength, size_t *first, df_error *err);

/*
 * sched_scale_model_input() - the UNet input for evaluation @i: @x scaled
 * as diffusers' scale_model_input (1/sqrt(sigma^2+1) for the k-diffusion
 * samplers, a copy otherwise). @out may equal @x. numel floats each.
 * @return DIFFUSE_ERR_INVALID_ARGUMENT for NULL or i out of range.
 */
diffuse_status sched_scale_model_input(const sched *s, size_t i, const float *x, float *out, df_error *err);

/*
 * sched_step() - one scheduler.step for evaluation @i: from the model output
 * @model_output at the current sample @x, writes the next sample to @out.
 * Calls must come in order i = first, first + 1, ... (the first call may
 * start anywhere: img2img). @rngs: @n_rngs generators; the noise of image k
 * of the batch (numel / n_rngs floats) is drawn from rngs[k], as diffusers
 * does with a list of generators; one generator draws the whole batch as one
 * tensor. Pass the generators that drew the VAE posterior sample and the
 * initial latents: diffusers draws from one stream in that order, then the
 * step noise. Needed only when sched_needs_rng(); otherwise may be NULL.
 * @out may equal @x or @model_output.
 * @return DIFFUSE_ERR_INVALID_ARGUMENT (NULL, i out of order, numel not a
 * multiple of n_rngs, generators missing).
 */
diffuse_status sched_step(sched *s, size_t i, const float *model_output, const float *x, df_rng *rngs,
                          size_t n_rngs, float *out, df_error *err);

/*
 * sched_add_noise() - scheduler.add_noise of clean latents @x0 with @noise
 * at evaluation @i's timestep (what img2img does at its first evaluation and
 * legacy inpainting at i + 1). @out may equal either input.
 * @return DIFFUSE_ERR_INVALID_ARGUMENT for NULL or i out of range.
 */
diffuse_status sched_add_noise(const sched *s, size_t i, const float *x0, const float *noise, float *out,
                               df_error *err);

/*
 * sched_predict_x0() - the clean latents the model output @model_output at
 * the current sample @x of evaluation @i implies (diffusers'
 * pred_original_sample, without clipping): for a sample x = a x0 + b eps in
 * the sampler's scaling, x0 = (x - b eps) / a (epsilon), a x - b v with
 * a^2 + b^2 = 1 (v-prediction). Used for decoded previews. @out may equal
 * either input.
 * @return DIFFUSE_ERR_INVALID_ARGUMENT for NULL or i out of range.
 */
diffuse_status sched_predict_x0(const sched *s, size_t i, const float *x, const float *model_output, float *out,
                                df_error *err);

#endif /* DIFFUSE_SCHED_SCHED_H */
