/*
 * sched_schedule.c - the noise schedule of a sampler: betas and
 * alphas_cumprod (torch float32, cumprod accumulated in double as torch
 * does), then the inference timesteps and sigmas of each scheduler's
 * set_timesteps (numpy float64 arithmetic: linspace, arange, interp,
 * Karras sigmas, sigma -> t). Each helper mirrors the library routine
 * diffusers calls, rounding for rounding, so schedules come out identical.
 */
#include "sched/sched_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* torch and numpy primitives                                                */
/* ------------------------------------------------------------------------ */

/* torch.linspace(start, end, n, dtype=float32) on the CPU: the first half
 * counts up from start, the second down from end, each one fused
 * multiply-add (what torch's vectorised kernel computes). */
static void torch_linspace_f32(double start, double end, int n, float *out) {
    float s = (float)start, e = (float)end;
    if (n == 1) {
        out[0] = s;
        return;
    }
    float step = (e - s) / (float)(n - 1);
    int half = n / 2;
    for (int i = 0; i < n; i++)
        out[i] = i < half ? fmaf(step, (float)i, s) : fmaf(-step, (float)(n - 1 - i), e);
}

/* numpy.linspace(start, stop, n) in float64 (endpoint included). */
static void np_linspace(double start, double stop, int n, double *out) {
    if (n == 1) {
        out[0] = start;
        return;
    }
    double step = (stop - start) / (double)(n - 1);
    for (int i = 0; i < n; i++) out[i] = (double)i * step + start;
    out[n - 1] = stop;
}

/* numpy.arange(start, 0, -step) for an integer start and a float step:
 * length ceil(-start / -step), then start + i * ((start - step) - start).
 * Returns the length (at most @cap values are written). */
static size_t np_arange_down(double start, double step, double *out, size_t cap) {
    double len_f = ceil((0.0 - start) / -step);
    size_t len = len_f > 0 ? (size_t)len_f : 0;
    double second = start + -step;
    double delta = second - start;
    for (size_t i = 0; i < len && i < cap; i++) out[i] = i == 0 ? start : i == 1 ? second : start + (double)i * delta;
    return len;
}

/* numpy.interp(x, arange(T), fp) for one x. */
static double np_interp(double x, const float *fp, int T) {
    if (isnan(x)) return x;
    if (x < 0.0) return fp[0];
    if (x >= (double)(T - 1)) return fp[T - 1];
    int j = (int)floor(x);
    if ((double)j == x) return fp[j];
    double slope = (double)fp[j + 1] - (double)fp[j]; /* the xp spacing is 1 */
    return slope * (x - (double)j) + (double)fp[j];
}

/* _convert_to_karras: rho = 7 spacing between sigma_max and sigma_min. */
static void karras_sigmas(double sigma_min, double sigma_max, int n, double *out) {
    np_linspace(0.0, 1.0, n, out); /* the ramp */
    double min_inv = pow(sigma_min, 1.0 / 7.0), max_inv = pow(sigma_max, 1.0 / 7.0);
    for (int i = 0; i < n; i++) out[i] = pow(max_inv + out[i] * (min_inv - max_inv), 7.0);
}

/* _sigma_to_t: fractional timestep of @sigma by linear interpolation of
 * log sigma over @log_sigmas (float32, ascending). */
static double sigma_to_t(double sigma, const float *log_sigmas, int T) {
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    int low = 0;
    for (int j = 0; j < T; j++)
        if (ls - (double)log_sigmas[j] >= 0.0) low = j; /* last index with dists >= 0 */
    if (low > T - 2) low = T - 2;
    float lo = log_sigmas[low], hi = log_sigmas[low + 1];
    double w = ((double)lo - ls) / (double)(lo - hi);
    w = w < 0.0 ? 0.0 : w > 1.0 ? 1.0 : w;
    return (1.0 - w) * (double)low + w * (double)(low + 1);
}

/* ------------------------------------------------------------------------ */
/* Betas and alphas_cumprod                                                  */
/* ------------------------------------------------------------------------ */

/* betas_for_alpha_bar with the squaredcos_cap_v2 transform, in double. */
static void betas_cosine(int T, float *out) {
    for (int i = 0; i < T; i++) {
        double t1 = (double)i / T, t2 = (double)(i + 1) / T;
        double a1 = cos((t1 + 0.008) / 1.008 * M_PI / 2), a2 = cos((t2 + 0.008) / 1.008 * M_PI / 2);
        double b = 1 - (a2 * a2) / (a1 * a1);
        out[i] = (float)(b < 0.999 ? b : 0.999);
    }
}

/* rescale_zero_terminal_snr, in torch float32. */
static void rescale_zero_snr(float *betas, int T) {
    double acc = 1.0;
    for (int t = 0; t < T; t++) {
        acc *= (double)(1.0f - betas[t]);
        betas[t] = sqrtf((float)acc); /* alphas_bar_sqrt */
    }
    float s0 = betas[0], sT = betas[T - 1];
    float scale = s0 / (s0 - sT);
    for (int t = 0; t < T; t++) {
        float v = (betas[t] - sT) * scale;
        betas[t] = v * v; /* alphas_bar */
    }
    float prev = betas[0];
    for (int t = 1; t < T; t++) {
        float cur = betas[t];
        betas[t] = 1.0f - cur / prev;
        prev = cur;
    }
    betas[0] = 1.0f - betas[0];
}

diffuse_status sched_build_alphas(sched *s, df_error *err) {
    const sched_config *c = &s->cfg;
    int T = c->num_train_timesteps;
    float *b = s->alphas_cumprod = calloc((size_t)T, sizeof(float));
    if (!b) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for the noise schedule");
    switch (c->betas) {
    default:
    case BETAS_LINEAR: torch_linspace_f32(c->beta_start, c->beta_end, T, b); break;
    case BETAS_SCALED_LINEAR:
        torch_linspace_f32(sqrt(c->beta_start), sqrt(c->beta_end), T, b);
        for (int t = 0; t < T; t++) b[t] = b[t] * b[t];
        break;
    case BETAS_COSINE: betas_cosine(T, b); break;
    case BETAS_SIGMOID: {
        float range = (float)(c->beta_end - c->beta_start), start = (float)c->beta_start;
        torch_linspace_f32(-6.0, 6.0, T, b);
        for (int t = 0; t < T; t++) b[t] = 1.0f / (1.0f + expf(-b[t])) * range + start;
        break;
    }
    case BETAS_TRAINED: memcpy(b, c->trained_betas, sizeof(float) * (size_t)T); break;
    }
    if (c->rescale_zero_snr) rescale_zero_snr(b, T);
    double acc = 1.0;
    for (int t = 0; t < T; t++) {
        acc *= (double)(1.0f - b[t]);
        b[t] = (float)acc;
    }
    int k_family = c->kind == SCHED_EULER || c->kind == SCHED_EULER_A || c->kind == SCHED_DPM || c->kind == SCHED_UNIPC;
    if (c->rescale_zero_snr && k_family) b[T - 1] = 0x1p-24f; /* keeps sigma_max finite */
    s->final_alpha_cumprod = c->set_alpha_to_one ? 1.0f : b[0];
    return DIFFUSE_OK;
}

/* sqrt((1 - ac) / ac) per train timestep, torch float32. */
static void base_sigmas(const sched *s, float *out) {
    for (int t = 0; t < s->cfg.num_train_timesteps; t++) {
        float ac = s->alphas_cumprod[t];
        out[t] = sqrtf((1.0f - ac) / ac);
    }
}

static float sigma_min_of_schedule(const sched *s) {
    float ac = s->alphas_cumprod[0];
    return sqrtf((1.0f - ac) / ac);
}

/* ------------------------------------------------------------------------ */
/* Timesteps and sigmas of each set_timesteps                                */
/* ------------------------------------------------------------------------ */

/* The descending timesteps of timestep_spacing for @n steps: @last is the
 * span (T, or less for DPM's lambda_min_clipped); @extra = 1 for DPM and
 * UniPC, which space n + 1 points and drop t = 0; @round_lin rounds the
 * linspace values (the k-diffusion samplers keep them fractional).
 * Returns the count: trailing spacing gives n + 1 values for some n, from
 * numpy.arange's length rule, exactly as diffusers does. */
static size_t spaced_timesteps(const sched_config *c, int last, int n, int extra, int round_lin, double *out) {
    int T = c->num_train_timesteps, m = n + extra;
    switch (c->spacing) {
    case SPACING_LINSPACE: { /* numpy.linspace(0, last - 1, m), reversed */
        double stop = (double)(last - 1), step = m > 1 ? stop / (double)(m - 1) : 0.0;
        for (int k = 0; k < n; k++) {
            int a = m - 1 - k;
            double v = m == 1 ? 0.0 : a == m - 1 ? stop : (double)a * step + 0.0;
            out[k] = round_lin ? nearbyint(v) : v;
        }
        return (size_t)n;
    }
    case SPACING_LEADING: {
        int ratio = last / m;
        for (int k = 0; k < n; k++) out[k] = (double)((m - 1 - k) * ratio) + (double)c->steps_offset;
        return (size_t)n;
    }
    case SPACING_TRAILING: {
        size_t len = np_arange_down((double)last, (double)T / (double)n, out, (size_t)n + 2);
        if (len > (size_t)n + 2) len = (size_t)n + 2;
        for (size_t k = 0; k < len; k++) out[k] = nearbyint(out[k]) - 1.0;
        return len;
    }
    }
    return 0;
}

/* Arrays of the schedule: @n_evals timesteps and @n_sigmas sigmas (0 for none). */
static diffuse_status alloc_schedule(sched *s, size_t n_evals, size_t n_sigmas, df_error *err) {
    s->n_evals = n_evals;
    s->n_sigmas = n_sigmas;
    s->timesteps = calloc(n_evals + 2, sizeof(double));
    s->sigmas = n_sigmas ? calloc(n_sigmas, sizeof(float)) : NULL;
    if (!s->timesteps || (n_sigmas && !s->sigmas))
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for the timestep schedule");
    return DIFFUSE_OK;
}

/* DDIM, DDPM and PNDM index alphas_cumprod by timestep: it must be in range. */
static diffuse_status check_int_timesteps(const sched *s, const double *ts, size_t n, df_error *err) {
    for (size_t k = 0; k < n; k++)
        if (ts[k] < 0 || ts[k] >= s->cfg.num_train_timesteps)
            return df_fail(err, DIFFUSE_ERR_UNSUPPORTED,
                           "%s: %d steps with this timestep_spacing/steps_offset give timestep %.0f, outside [0, %d)",
                           sched_kind_class(s->cfg.kind), s->steps, ts[k], s->cfg.num_train_timesteps);
    return DIFFUSE_OK;
}

static diffuse_status build_alpha_based(sched *s, double *ts, df_error *err) {
    size_t count = spaced_timesteps(&s->cfg, s->cfg.num_train_timesteps, s->steps, 0, 1, ts);
    diffuse_status st = check_int_timesteps(s, ts, count, err);
    if (st != DIFFUSE_OK) return st;
    if (s->cfg.kind != SCHED_PNDM) {
        if ((st = alloc_schedule(s, count, 0, err)) != DIFFUSE_OK) return st;
        memcpy(s->timesteps, ts, count * sizeof(double));
        return DIFFUSE_OK;
    }
    /* PLMS: d0, d1, d1, d2, ..., d(n-1): one extra evaluation at the start */
    size_t n_evals = count >= 2 ? count + 1 : count;
    if ((st = alloc_schedule(s, n_evals, 0, err)) != DIFFUSE_OK) return st;
    for (size_t e = 0; e < n_evals; e++) s->timesteps[e] = ts[e <= 1 || count < 2 ? e : e - 1];
    return DIFFUSE_OK;
}

/* LMS, Euler, Euler ancestral, Heun: float32 timesteps, sigmas by
 * interpolation (or Karras), a final 0 (or sigma_min for Euler). */
static diffuse_status build_k_diffusion(sched *s, double *ts, float *base, float *log_base, df_error *err) {
    const sched_config *c = &s->cfg;
    int T = c->num_train_timesteps, n = s->steps;
    size_t count = spaced_timesteps(c, T, n, 0, 0, ts);
    double *sig = malloc(sizeof(double) * (count + 2));
    if (!sig) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for the sigma schedule");
    for (size_t k = 0; k < count; k++) {
        ts[k] = (double)(float)ts[k];
        sig[k] = np_interp(ts[k], base, T);
    }
    if (c->use_karras) {
        int euler = c->kind == SCHED_EULER;
        double smin = euler && !isnan(c->sigma_min) ? c->sigma_min : sig[count - 1];
        double smax = euler && !isnan(c->sigma_max) ? c->sigma_max : sig[0];
        count = (size_t)n;
        karras_sigmas(smin, smax, n, sig);
        for (size_t k = 0; k < count; k++) ts[k] = (double)(float)sigma_to_t(sig[k], log_base, T);
    }
    float final = c->kind == SCHED_EULER && c->final_sigma_min ? sigma_min_of_schedule(s) : 0.0f;
    int heun = c->kind == SCHED_HEUN;
    diffuse_status st = alloc_schedule(s, heun ? 2 * count - 1 : count, heun ? 2 * count : count + 1, err);
    if (st == DIFFUSE_OK) {
        for (size_t e = 0; e < s->n_evals; e++) s->timesteps[e] = ts[heun ? (e + 1) / 2 : e];
        for (size_t k = 0; k + 1 < s->n_sigmas; k++) s->sigmas[k] = (float)sig[heun ? (k + 1) / 2 : k];
        s->sigmas[s->n_sigmas - 1] = final;
        float mx = 0.0f;
        for (size_t k = 0; k < s->n_sigmas; k++) mx = s->sigmas[k] > mx ? s->sigmas[k] : mx;
        s->init_noise_sigma = c->spacing == SPACING_LEADING ? sqrtf(mx * mx + 1.0f) : mx;
    }
    free(sig);
    return st;
}

/* Index of the first lambda_t (ascending in flip order) >= lambda_min_clipped:
 * torch.searchsorted(torch.flip(lambda_t), lambda_min_clipped). */
static int clipped_index(const sched *s) {
    int T = s->cfg.num_train_timesteps, k = 0;
    float v = (float)s->cfg.lambda_min_clipped;
    for (; k < T; k++) {
        float ac = s->alphas_cumprod[T - 1 - k];
        float lambda = logf(sqrtf(ac)) - logf(sqrtf(1.0f - ac));
        if (!(lambda < v)) break;
    }
    return k;
}

/* DPM-Solver++ and UniPC: integer timesteps over n + 1 points, sigmas by
 * interpolation or Karras (rounded to integer timesteps). */
static diffuse_status build_multistep(sched *s, double *ts, float *base, float *log_base, df_error *err) {
    const sched_config *c = &s->cfg;
    int T = c->num_train_timesteps, n = s->steps, dpm = c->kind == SCHED_DPM;
    int last = dpm ? T - clipped_index(s) : T;
    size_t count = spaced_timesteps(c, last, n, 1, 1, ts);
    double *sig = malloc(sizeof(double) * (count + 2));
    if (!sig) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for the sigma schedule");
    float final = c->final_sigma_min ? sigma_min_of_schedule(s) : 0.0f;
    if (c->use_karras) {
        double smin = !dpm && !isnan(c->sigma_min) ? c->sigma_min : base[0];
        double smax = !dpm && !isnan(c->sigma_max) ? c->sigma_max : base[T - 1];
        count = (size_t)n;
        karras_sigmas(smin, smax, n, sig);
        for (size_t k = 0; k < count; k++) {
            double t = sigma_to_t(sig[k], log_base, T);
            ts[k] = trunc(dpm && c->betas == BETAS_COSINE ? t : nearbyint(t));
        }
        if (!dpm && c->final_sigma_min) final = (float)sig[count - 1];
    } else {
        for (size_t k = 0; k < count; k++) sig[k] = np_interp(ts[k], base, T);
    }
    diffuse_status st = alloc_schedule(s, count, count + 1, err);
    if (st == DIFFUSE_OK) {
        memcpy(s->timesteps, ts, count * sizeof(double));
        for (size_t k = 0; k < count; k++) s->sigmas[k] = (float)sig[k];
        s->sigmas[count] = final;
    }
    free(sig);
    return st;
}

diffuse_status sched_build_timesteps(sched *s, df_error *err) {
    int T = s->cfg.num_train_timesteps;
    double *ts = malloc(sizeof(double) * ((size_t)s->steps + 4));
    float *base = malloc(sizeof(float) * (size_t)T * 2);
    if (!ts || !base) {
        free(ts);
        free(base);
        return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "out of memory for the timestep schedule");
    }
    float *log_base = base + T;
    base_sigmas(s, base);
    for (int t = 0; t < T; t++) log_base[t] = logf(base[t]);
    s->init_noise_sigma = 1.0f;
    s->order = s->cfg.kind == SCHED_HEUN ? 2 : 1;
    diffuse_status st;
    switch (s->cfg.kind) {
    case SCHED_DDIM:
    case SCHED_DDPM:
    case SCHED_PNDM: st = build_alpha_based(s, ts, err); break;
    case SCHED_DPM:
    case SCHED_UNIPC: st = build_multistep(s, ts, base, log_base, err); break;
    default: st = build_k_diffusion(s, ts, base, log_base, err); break;
    }
    free(ts);
    free(base);
    return st;
}
