/*
 * sched_internal.h - what the sampler files share: the resolved scheduler
 * configuration, the sampler state, the schedule builders that mirror
 * numpy/torch arithmetic, and one step function per diffusers scheduler.
 */
#ifndef DIFFUSE_SCHED_INTERNAL_H
#define DIFFUSE_SCHED_INTERNAL_H

#include "sched/sched.h"

#include <stddef.h>

/* Bit-exact float32 needs every multiply and add rounded on its own:
 * GCC in ISO C mode never fuses them; clang would, on FMA targets. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef enum sched_kind {
    SCHED_DDIM,
    SCHED_DDPM,
    SCHED_PNDM,
    SCHED_LMS,
    SCHED_EULER,
    SCHED_EULER_A,
    SCHED_HEUN,
    SCHED_DPM,  /* DPMSolverMultistepScheduler: dpmsolver++ or sde-dpmsolver++ */
    SCHED_UNIPC
} sched_kind;

typedef enum sched_pred { PRED_EPSILON, PRED_V, PRED_SAMPLE } sched_pred;
typedef enum sched_spacing { SPACING_LEADING, SPACING_LINSPACE, SPACING_TRAILING } sched_spacing;
typedef enum sched_betas { BETAS_LINEAR, BETAS_SCALED_LINEAR, BETAS_COSINE, BETAS_SIGMOID, BETAS_TRAINED } sched_betas;
typedef enum sched_variance { VAR_FIXED_SMALL, VAR_FIXED_SMALL_LOG, VAR_FIXED_LARGE } sched_variance;

#define SCHED_MAX_HIST 4       /* LMS and PNDM keep 4 past values; DPM/UniPC up to order 3 */
#define SCHED_MAX_DISABLED 64  /* UniPC disable_corrector entries */

/* A scheduler config after from_config: every option the kind reads. */
typedef struct sched_config {
    sched_kind kind;
    int num_train_timesteps;
    double beta_start, beta_end;
    sched_betas betas;
    float *trained_betas; /* [num_train_timesteps] when betas == BETAS_TRAINED (owned) */
    sched_pred pred;
    sched_spacing spacing;
    int steps_offset;
    int rescale_zero_snr;
    int clip_sample;
    double clip_sample_range;
    int set_alpha_to_one;     /* DDIM, PNDM */
    sched_variance variance;  /* DDPM */
    int use_karras;
    double sigma_min, sigma_max; /* Euler/UniPC Karras bounds; NAN = from the schedule */
    int final_sigma_min;         /* final_sigmas_type "sigma_min" (else "zero") */
    int solver_order;            /* DPM, UniPC */
    int sde;                     /* DPM algorithm_type sde-dpmsolver++ */
    int solver_heun;             /* DPM solver_type heun (else midpoint) */
    int lower_order_final;
    int euler_at_final;
    double lambda_min_clipped;
    int predict_x0;              /* UniPC */
    int bh1;                     /* UniPC solver_type bh1 (else bh2) */
    int disable_corrector[SCHED_MAX_DISABLED];
    int n_disable_corrector;
} sched_config;

struct sched {
    sched_config cfg;
    int steps;               /* inference steps asked for */
    size_t numel;            /* floats per sample array (whole batch) */
    double eta;              /* DDIM */
    float *alphas_cumprod;   /* [T] */
    float final_alpha_cumprod;
    size_t n_evals;
    double *timesteps;       /* [n_evals] */
    float *sigmas;           /* [n_sigmas] or NULL */
    size_t n_sigmas;
    float init_noise_sigma;
    int order;
    /* multistep state */
    int started;
    size_t next;             /* the evaluation sched_step expects next */
    float *slab;             /* one allocation behind hist, saved, noise, tmp */
    float *hist[SCHED_MAX_HIST];  /* newest last: hist[n_hist - 1] (rotated, not in slab order) */
    int n_hist;
    float *saved;            /* PNDM cur_sample, Heun sample, UniPC last_sample */
    int has_saved;
    float *noise;            /* scratch: drawn noise */
    float *tmp;              /* scratch */
    int counter;             /* PNDM */
    float heun_dt;           /* Heun: dt of the pending second-order step */
    int heun_second;         /* Heun: next call is the correction */
    int lower_order_nums;    /* DPM, UniPC */
    int this_order;          /* UniPC: order of the last predictor */
};

/* sched_config.c */
diffuse_status sched_config_resolve(const struct json_object *config, diffuse_sampler sampler, sched_config *out,
                                    df_error *err);
void sched_config_clear(sched_config *cfg);
const char *sched_kind_class(sched_kind kind);

/* sched_schedule.c */
diffuse_status sched_build_alphas(sched *s, df_error *err);
diffuse_status sched_build_timesteps(sched *s, df_error *err);

/* sched.c: history and noise helpers for the step files */
float *sched_hist_push(sched *s, int cap);         /* slot for a new newest entry */
const float *sched_hist_back(const sched *s, int k); /* k = 0: newest */

/* clamp(v, -clip_sample_range, clip_sample_range) when clip_sample is set. */
float sched_clip(const sched *s, float v);

/* One step per scheduler: evaluation i, model output m, sample x, next
 * sample y (y may alias x or m: every loop reads element j before it
 * writes it). Noise, where a step needs it, is already in s->noise. */
void sched_ddim_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_ddpm_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_pndm_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_lms_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_euler_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_euler_a_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_heun_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_dpm_step(sched *s, size_t i, const float *m, const float *x, float *y);
void sched_unipc_step(sched *s, size_t i, const float *m, const float *x, float *y);

/* alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t (DPM, UniPC). */
void sched_sigma_to_alpha_sigma(float sigma, float *alpha_t, float *sigma_t);

#endif /* DIFFUSE_SCHED_INTERNAL_H */
