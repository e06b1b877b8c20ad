/*
 * api.c - the public entry points: argument checks, status and message
 * bookkeeping, and dispatch to model/, text/, the backends and pipe/.
 * Nothing here computes; every function checks what the host passed and
 * turns internal failures into a status plus a message.
 */
#include "diffuse.h"

#include "backend.h"
#include "common.h"
#include "cuda/cuda_module.h"
#include "devices.h"
#include "job.h"
#include "model/model.h"
#include "pipe/pipe.h"
#include "text/tokenizer.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Versions and statuses                                                     */
/* ------------------------------------------------------------------------ */

#define DF_STR2(x) #x
#define DF_STR(x) DF_STR2(x)

DIFFUSE_API uint32_t diffuse_version(void) { return DIFFUSE_VERSION_NUMBER; }

DIFFUSE_API const char *diffuse_version_string(void) {
    return DF_STR(DIFFUSE_VERSION_MAJOR) "." DF_STR(DIFFUSE_VERSION_MINOR) "." DF_STR(DIFFUSE_VERSION_PATCH);
}

DIFFUSE_API const char *diffuse_status_string(diffuse_status status) {
    switch (status) {
#define DF_STATUS_CASE(name, value, msg) \
    case name: return msg;
        DIFFUSE_STATUS_LIST(DF_STATUS_CASE)
#undef DF_STATUS_CASE
    }
    return "unknown status";
}

/* ------------------------------------------------------------------------ */
/* Versioned parameter structs                                               */
/* ------------------------------------------------------------------------ */

/* Size of a params struct as version 0.1 defined it: the smallest a host may
 * pass. When a struct grows, its 0.1 size stays the end of this field. */
#define DF_V01_SIZE(type, last_field) (offsetof(type, last_field) + sizeof(((type *)0)->last_field))

/* Copies the host's struct over @defaults, reading only the bytes inside both
 * its struct_size and ours. Returns nonzero if struct_size is below @min. */
static int df_read_params(void *defaults, size_t ours, const void *host, size_t min) {
    uint32_t host_size;
    memcpy(&host_size, host, sizeof host_size);
    if (host_size < min) return 1;
    memcpy(defaults, host, host_size < ours ? host_size : ours);
    ((uint32_t *)defaults)[0] = (uint32_t)ours;
    return 0;
}

DIFFUSE_API void diffuse_model_params_init(diffuse_model_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->log_level = DIFFUSE_LOG_WARN;
    p->weight_type = DIFFUSE_WEIGHTS_AUTO;
}

DIFFUSE_API void diffuse_ctx_params_init(diffuse_ctx_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->device = DIFFUSE_DEVICE_AUTO;
    p->precision = DIFFUSE_PRECISION_AUTO;
    p->log_level = DIFFUSE_LOG_WARN;
}

static void df_output_format_init(diffuse_output_format *o) {
    o->format = DIFFUSE_PIXEL_RGB8;
    o->origin = DIFFUSE_ORIGIN_TOP_LEFT;
    o->color_space = DIFFUSE_COLOR_SRGB;
}

DIFFUSE_API void diffuse_generate_params_init(diffuse_generate_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->prompt = "";
    p->n_images = 1;
    p->steps = 30;
    p->guidance_scale = 7.5f;
    p->sampler = DIFFUSE_SAMPLER_DEFAULT;
    df_output_format_init(&p->output);
}

DIFFUSE_API void diffuse_edit_params_init(diffuse_edit_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->prompt = "";
    p->n_images = 1;
    p->steps = 30;
    p->guidance_scale = 7.5f;
    p->strength = 1.0f;
    p->sampler = DIFFUSE_SAMPLER_DEFAULT;
    df_output_format_init(&p->output);
}

DIFFUSE_API void diffuse_variation_params_init(diffuse_variation_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->n_images = 1;
    p->steps = 30;
    p->guidance_scale = 7.5f;
    p->strength = 0.7f;
    p->sampler = DIFFUSE_SAMPLER_DEFAULT;
    df_output_format_init(&p->output);
}

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

static diffuse_status df_load_fail(const diffuse_model_params *p, const df_logger *lg, df_error *err) {
    if (p && p->error_buf && p->error_buf_size) df_strlcpy(p->error_buf, err->msg, p->error_buf_size);
    df_log(lg, DIFFUSE_LOG_ERROR, "%s", err->msg);
    return err->status;
}

DIFFUSE_API diffuse_status diffuse_model_load(const char *path, const diffuse_model_params *params,
                                              diffuse_model **out_model) {
    df_error err;
    df_logger lg = {0};
    diffuse_model_params p;
    diffuse_model_params_init(&p);
    df_error_clear(&err);
    if (out_model) *out_model = NULL;
    if (params && df_read_params(&p, sizeof p, params, DF_V01_SIZE(diffuse_model_params, error_buf_size))) {
        df_fail(&err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_model_load: params->struct_size %u is too small",
                (unsigned)params->struct_size);
        return df_load_fail(NULL, &lg, &err);
    }
    lg.fn = p.log_fn;
    lg.user = p.log_user;
    lg.level = p.log_level;
    if (!path || !out_model) {
        df_fail(&err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_model_load: %s is NULL", path ? "out_model" : "path");
        return df_load_fail(&p, &lg, &err);
    }
    if ((unsigned)p.log_level > DIFFUSE_LOG_DEBUG || (unsigned)p.weight_type > DIFFUSE_WEIGHTS_BF16) {
        df_fail(&err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_model_load: log_level %d or weight_type %d out of range",
                (int)p.log_level, (int)p.weight_type);
        return df_load_fail(&p, &lg, &err);
    }
    if (p.weight_type != DIFFUSE_WEIGHTS_AUTO && p.weight_type != DIFFUSE_WEIGHTS_F32) {
        df_fail(&err, DIFFUSE_ERR_UNSUPPORTED,
                "diffuse_model_load: weight_type %d: this version keeps host weights in float32 only",
                (int)p.weight_type);
        return df_load_fail(&p, &lg, &err);
    }
    const df_load_hooks hooks = {p.progress_fn, p.progress_user};
    diffuse_status st = df_model_load_ex(path, &lg, &hooks, out_model, &err);
    if (st != DIFFUSE_OK) {
        *out_model = NULL;
        return df_load_fail(&p, &lg, &err);
    }
    return DIFFUSE_OK;
}

DIFFUSE_API void diffuse_model_free(diffuse_model *model) {
    if (model) df_model_free(model);
}

DIFFUSE_API diffuse_status diffuse_model_get_info(const diffuse_model *model, diffuse_model_info *info) {
    if (!model || !info || info->struct_size < DF_V01_SIZE(diffuse_model_info, weight_bytes))
        return DIFFUSE_ERR_INVALID_ARGUMENT;
    diffuse_model_info v;
    memset(&v, 0, sizeof v);
    v.struct_size = info->struct_size < sizeof v ? info->struct_size : (uint32_t)sizeof v;
    const df_model_dims *d = &model->dims;
    v.family = model->family;
    v.unet_in_channels = (uint32_t)d->unet_in_channels;
    v.latent_channels = (uint32_t)d->latent_channels;
    v.vae_scale_factor = (uint32_t)d->vae_scale_factor;
    v.sample_size = (uint32_t)d->unet_sample_size;
    v.text_hidden_size = (uint32_t)d->text_hidden_size;
    v.text_layers = (uint32_t)d->text_layers;
    v.v_prediction = d->v_prediction;
    v.unet_parameters = model->comp[DF_COMP_UNET].n_params;
    v.vae_parameters = model->comp[DF_COMP_VAE].n_params;
    v.text_encoder_parameters = model->comp[DF_COMP_TEXT_ENCODER].n_params;
    v.weight_bytes = model->weight_bytes;
    df_model_memory(model, &v.host_bytes, &v.weight_dtype);
    memcpy(info, &v, v.struct_size);
    return DIFFUSE_OK;
}

DIFFUSE_API diffuse_status diffuse_tokenize(const diffuse_model *model, const char *text, int32_t *ids,
                                            size_t capacity, size_t *count) {
    if (count) *count = 0;
    if (!model || !text || !count || (capacity && !ids)) return DIFFUSE_ERR_INVALID_ARGUMENT;
    df_error err;
    df_error_clear(&err);
    return df_tokenize(model->tokenizer, text, ids, capacity, count, &err);
}

/* ------------------------------------------------------------------------ */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------ */

struct diffuse_ctx {
    const diffuse_model *model;
    diffuse_ctx_params params;
    df_logger log;
    bk_backend *backend;
    df_error err; /* last failure; msg "" after success */
    /* One call or job at a time (see job.h): guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t idle; /* signalled when busy drops to 0 */
    int busy;            /* a blocking call or a job holds the context */
    diffuse_job *job;    /* the job holding it, if any */
    /* Previews (diffuse_ctx_set_preview); changed only while not busy. */
    diffuse_preview_fn preview_fn;
    void *preview_user;
    uint32_t preview_every;
    uint32_t preview_decode_every; /* diffuse_ctx_set_preview_decode; 0 = never */
    int preview_fitted;
    float preview_proj[17 * 3]; /* (L + 1) x 3, fitted once per context */
};

diffuse_status df_ctx_begin(diffuse_ctx *ctx, diffuse_job *job) {
    pthread_mutex_lock(&ctx->mu);
    const int was = ctx->busy;
    if (!was) {
        ctx->busy = 1;
        ctx->job = job;
        df_error_clear(&ctx->err);
    }
    pthread_mutex_unlock(&ctx->mu);
    return was ? DIFFUSE_ERR_BUSY : DIFFUSE_OK;
}

void df_ctx_end(diffuse_ctx *ctx) {
    pthread_mutex_lock(&ctx->mu);
    ctx->busy = 0;
    ctx->job = NULL;
    pthread_cond_broadcast(&ctx->idle);
    pthread_mutex_unlock(&ctx->mu);
}

const char *df_ctx_message(const diffuse_ctx *ctx) { return ctx->err.msg; }

/* Records a failure on @ctx, logs it, and returns its status. */
static diffuse_status ctx_fail(diffuse_ctx *ctx, diffuse_status st, const char *fmt, ...) DF_PRINTF(3, 4);
static diffuse_status ctx_fail(diffuse_ctx *ctx, diffuse_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err.msg, sizeof ctx->err.msg, fmt, ap);
    va_end(ap);
    ctx->err.status = st;
    df_log(&ctx->log, DIFFUSE_LOG_ERROR, "%s", ctx->err.msg);
    return st;
}

static diffuse_status ctx_check_params(const diffuse_ctx_params *p, df_error *err) {
    if ((unsigned)p->device > DIFFUSE_DEVICE_CUDA)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_ctx_create: device %d out of range", (int)p->device);
    if ((unsigned)p->precision > DIFFUSE_PRECISION_BF16)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_ctx_create: precision %d out of range",
                       (int)p->precision);
    if ((unsigned)p->log_level > DIFFUSE_LOG_DEBUG)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_ctx_create: log_level %d out of range",
                       (int)p->log_level);
    if (p->n_threads < 0 || p->n_threads > 4096)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_ctx_create: n_threads %d out of range 0..4096",
                       p->n_threads);
    if (p->device_index < 0)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_ctx_create: device_index %d is negative",
                       p->device_index);
    return DIFFUSE_OK;
}

/* Picks the backend for the requested device. CUDA runs on the backend
 * module (lib/cuda/cuda_module.h) when it finds a GPU: device CUDA without
 * one is NO_DEVICE (the message says what the module probe found), AUTO
 * falls back to the CPU with a log line. */
static diffuse_status ctx_open_backend(diffuse_ctx *ctx, df_error *err) {
    const diffuse_ctx_params *p = &ctx->params;
    if (p->device != DIFFUSE_DEVICE_CPU) {
        char note[256];
        const int gpus = df_cuda_probe(note, sizeof note);
        if (gpus > 0 && p->device_index >= gpus)
            snprintf(note, sizeof note, "device_index %d out of range: %d CUDA device%s", p->device_index, gpus,
                     gpus == 1 ? "" : "s");
        if (gpus > 0 && p->device_index < gpus) {
            const diffuse_status st = df_cuda_create(p->device_index, p->precision, &ctx->backend, err);
            if (st == DIFFUSE_OK || p->device == DIFFUSE_DEVICE_CUDA) return st;
            df_log(&ctx->log, DIFFUSE_LOG_WARN, "device auto: using the CPU (CUDA backend: %s)", err->msg);
            df_error_clear(err);
        } else if (p->device == DIFFUSE_DEVICE_CUDA) {
            return df_fail(err, DIFFUSE_ERR_NO_DEVICE, "diffuse_ctx_create: device CUDA requested: %s", note);
        } else {
            df_log(&ctx->log, DIFFUSE_LOG_INFO, "device auto: using the CPU (%s)", note);
        }
    }
    if (p->precision == DIFFUSE_PRECISION_F16 || p->precision == DIFFUSE_PRECISION_BF16)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED,
                       "diffuse_ctx_create: the CPU backend computes in float32 only (precision %d requested)",
                       (int)p->precision);
    return bk_cpu_create(p->n_threads, &ctx->backend, err);
}

DIFFUSE_API diffuse_status diffuse_ctx_create(const diffuse_model *model, const diffuse_ctx_params *params,
                                              diffuse_ctx **out_ctx) {
    if (out_ctx) *out_ctx = NULL;
    if (!model || !out_ctx) return DIFFUSE_ERR_INVALID_ARGUMENT;
    diffuse_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return DIFFUSE_ERR_OUT_OF_MEMORY;
    if (pthread_mutex_init(&ctx->mu, NULL) != 0) {
        free(ctx);
        return DIFFUSE_ERR_OUT_OF_MEMORY;
    }
    if (pthread_cond_init(&ctx->idle, NULL) != 0) {
        pthread_mutex_destroy(&ctx->mu);
        free(ctx);
        return DIFFUSE_ERR_OUT_OF_MEMORY;
    }
    diffuse_ctx_params_init(&ctx->params);
    df_error err;
    df_error_clear(&err);
    diffuse_status st = DIFFUSE_OK;
    if (params && df_read_params(&ctx->params, sizeof ctx->params, params,
                                 DF_V01_SIZE(diffuse_ctx_params, memory_budget)))
        st = df_fail(&err, DIFFUSE_ERR_INVALID_ARGUMENT, "diffuse_ctx_create: params->struct_size %u is too small",
                     (unsigned)params->struct_size);
    ctx->model = model;
    ctx->log.fn = ctx->params.log_fn;
    ctx->log.user = ctx->params.log_user;
    ctx->log.level = ctx->params.log_level;
    if (st == DIFFUSE_OK) st = ctx_check_params(&ctx->params, &err);
    if (st == DIFFUSE_OK) st = ctx_open_backend(ctx, &err);
    if (st != DIFFUSE_OK) {
        df_log(&ctx->log, DIFFUSE_LOG_ERROR, "%s", err.msg);
        pthread_cond_destroy(&ctx->idle);
        pthread_mutex_destroy(&ctx->mu);
        free(ctx);
        return st;
    }
    df_error_clear(&ctx->err);
    *out_ctx = ctx;
    return DIFFUSE_OK;
}

DIFFUSE_API void diffuse_ctx_free(diffuse_ctx *ctx) {
    if (!ctx) return;
    /* A job still running: cancel it and wait until its worker has let go
     * of the context (df_ctx_end); the job itself lives on until
     * diffuse_job_free. */
    pthread_mutex_lock(&ctx->mu);
    if (ctx->job) df_job_request_cancel(ctx->job);
    while (ctx->busy) pthread_cond_wait(&ctx->idle, &ctx->mu);
    pthread_mutex_unlock(&ctx->mu);
    if (ctx->backend) ctx->backend->ops->destroy(ctx->backend);
    pthread_cond_destroy(&ctx->idle);
    pthread_mutex_destroy(&ctx->mu);
    free(ctx);
}

DIFFUSE_API const char *diffuse_ctx_last_error(const diffuse_ctx *ctx) {
    if (!ctx) return "diffuse_ctx_last_error: ctx is NULL";
    return ctx->err.msg;
}

/* ------------------------------------------------------------------------ */
/* Images                                                                    */
/* ------------------------------------------------------------------------ */

DIFFUSE_API void diffuse_images_free(diffuse_images *images) {
    if (!images) return;
    const df_images *priv = (const df_images *)images; /* the library allocated it so */
    if (images->images && !priv->caller_pixels)
        for (uint32_t i = 0; i < images->count; i++) free(images->images[i].data);
    free(images->images);
    free(images->seeds);
    free((df_images *)images);
}

/* Checks an input image description; @what names it in the message. */
static diffuse_status check_image(diffuse_ctx *ctx, const char *call, const char *what, const diffuse_image *im) {
    if (!im) return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call, what);
    if ((unsigned)im->format > DIFFUSE_PIXEL_BGRA8 || (unsigned)im->origin > DIFFUSE_ORIGIN_BOTTOM_LEFT ||
        (unsigned)im->color_space > DIFFUSE_COLOR_LINEAR)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: %s has an unknown format/origin/color space", call,
                        what);
    if (im->width == 0 || im->height == 0 || im->width > 16384 || im->height > 16384)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: %s is %ux%u; sides must be 1..16384", call, what,
                        im->width, im->height);
    if ((uint64_t)im->stride < (uint64_t)im->width * (uint64_t)df_bytes_per_pixel(im->format))
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: %s stride %u is below width %u x %d bytes", call,
                        what, im->stride, im->width, df_bytes_per_pixel(im->format));
    if (!im->data) return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: %s data is NULL", call, what);
    return DIFFUSE_OK;
}

static diffuse_status check_output(diffuse_ctx *ctx, const char *call, const diffuse_output_format *o) {
    if ((unsigned)o->format > DIFFUSE_PIXEL_BGRA8 || (unsigned)o->origin > DIFFUSE_ORIGIN_BOTTOM_LEFT ||
        (unsigned)o->color_space > DIFFUSE_COLOR_LINEAR)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: output format/origin/color space out of range", call);
    return DIFFUSE_OK;
}

/* Checks shared by the three calls: counts, steps, guidance, sampler. */
static diffuse_status check_common(diffuse_ctx *ctx, const char *call, uint32_t n, uint32_t steps, float guidance,
                                   diffuse_sampler sampler, const diffuse_output_format *out) {
    if (n < 1 || n > 16) return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: n_images %u not in 1..16", call, n);
    if (steps < 1 || steps > 1000)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: steps %u not in 1..1000", call, steps);
    if (!isfinite(guidance) || guidance < 0.0f || guidance > 100.0f)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: guidance_scale %g not in 0..100", call, guidance);
    if ((unsigned)sampler > DIFFUSE_SAMPLER_UNIPC)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: sampler %d unknown", call, (int)sampler);
    return check_output(ctx, call, out);
}

/* strength in (0, 1], leaving at least one of @steps to run: diffusers runs
 * min(int(steps * strength), steps) of them. */
static diffuse_status check_strength(diffuse_ctx *ctx, const char *call, float s, uint32_t steps) {
    if (!isfinite(s) || s <= 0.0f || s > 1.0f)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: strength %g not in (0, 1]", call, s);
    if (steps >= 1 && steps <= 1000 && (int)((double)steps * (double)s) < 1)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT,
                        "%s: strength %g of %u steps leaves no step to run (int(steps * strength) = 0)", call, s,
                        steps);
    return DIFFUSE_OK;
}

/* Input images of edit/variation: the output has the input's size, so the
 * same size rule as diffuse_generate applies. */
static diffuse_status check_input_size(diffuse_ctx *ctx, const char *call, const diffuse_image *im) {
    if (im->width % 8 || im->height % 8 || im->width > 8192 || im->height > 8192)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT,
                        "%s: image is %ux%u: width and height must be multiples of 8, at most 8192 (crop or resize "
                        "it first)",
                        call, im->width, im->height);
    return DIFFUSE_OK;
}

static int ctx_on_device(const diffuse_ctx *ctx) {
    return ctx->backend && strcmp(ctx->backend->ops->name, "cpu") != 0;
}

/* The upper bound of the device bytes a CUDA backend allocates for @m's
 * weights (cuda_module.h). */
static uint64_t device_weight_bound(const diffuse_model *m) {
    uint64_t bytes, count;
    df_model_f32_weights(m, &bytes, &count);
    return df_cuda_weight_bound(bytes, count);
}

/* A device budget bounds the arena plus the weights' device copy: what is
 * left for the arena once the weights' bound @weights is taken (0 = none). */
static uint64_t device_arena_budget(uint64_t budget, uint64_t weights) {
    return budget > weights ? budget - weights : 0;
}

/* Sets up a pipeline run on @ctx, or fails when the model cannot run one. */
static diffuse_status run_begin(diffuse_ctx *ctx, const char *call, df_run *r) {
    const diffuse_model *m = ctx->model;
    if (!m->unet_net || !m->vae_net || !m->text_net)
        return ctx_fail(ctx, DIFFUSE_ERR_UNSUPPORTED,
                        "%s: %s is a single-file checkpoint without the original Stable Diffusion layout "
                        "(no model.diffusion_model.input_blocks.*): it was recognised but cannot run",
                        call, m->path);
    memset(r, 0, sizeof *r);
    r->model = m;
    r->bk = ctx->backend;
    r->log = &ctx->log;
    r->progress_fn = ctx->params.progress_fn;
    r->progress_user = ctx->params.progress_user;
    r->err = &ctx->err;
    r->t_start = df_now();
    r->memory_budget = ctx->params.memory_budget;
    if (r->memory_budget && ctx_on_device(ctx)) {
        r->budget_weights = device_weight_bound(m);
        r->memory_budget = device_arena_budget(ctx->params.memory_budget, r->budget_weights);
        if (!r->memory_budget)
            return ctx_fail(ctx, DIFFUSE_ERR_OUT_OF_MEMORY,
                            "%s: the context's memory_budget (%llu MiB) cannot hold the model's weights on the "
                            "device (up to %llu MiB) and any working memory",
                            call, (unsigned long long)(ctx->params.memory_budget >> 20),
                            (unsigned long long)((r->budget_weights + (1u << 20) - 1) >> 20));
    }
    if (ctx->preview_fn) {
        r->preview_fn = ctx->preview_fn;
        r->preview_user = ctx->preview_user;
        r->preview_every = ctx->preview_every;
        r->preview_proj = ctx->preview_proj;
        r->preview_decode_every = ctx->preview_decode_every;
    }
    return DIFFUSE_OK;
}

/* Logs a failed run's message (already in ctx->err) and returns its status. */
static diffuse_status run_end(diffuse_ctx *ctx, const char *call, diffuse_status st) {
    if (st == DIFFUSE_OK) {
        df_error_clear(&ctx->err);
        return st;
    }
    if (ctx->err.status != st || !ctx->err.msg[0]) df_fail(&ctx->err, st, "%s", diffuse_status_string(st));
    df_fail_prefix(&ctx->err, "%s: ", call);
    df_log(&ctx->log, st == DIFFUSE_CANCELLED ? DIFFUSE_LOG_INFO : DIFFUSE_LOG_ERROR, "%s", ctx->err.msg);
    return st;
}

/* Reads the host's params struct into the library-size @p with defaults. */
#define DF_READ_PARAMS(call, type, last_field)                                                            \
    type##_init(p);                                                                                       \
    if (df_read_params(p, sizeof *p, params, DF_V01_SIZE(type, last_field)))                              \
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: params->struct_size %u is too small", call, \
                        (unsigned)params->struct_size)


static diffuse_status check_generate(diffuse_ctx *ctx, const diffuse_generate_params *params,
                                     diffuse_generate_params *p) {
    static const char call[] = "diffuse_generate";
    DF_READ_PARAMS(call, diffuse_generate_params, tile_y);
    if (!p->prompt) return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: prompt is NULL", call);
    if (p->width % 8 || p->height % 8 || p->width > 8192 || p->height > 8192)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT,
                        "%s: size %ux%u: width and height must be multiples of 8, at most 8192 (0 = native)", call,
                        p->width, p->height);
    if (!isfinite(p->guidance_rescale) || p->guidance_rescale < 0.0f || p->guidance_rescale > 1.0f)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: guidance_rescale %g not in 0..1", call,
                        p->guidance_rescale);
    if (p->clip_skip > 64) return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: clip_skip %u too large", call, p->clip_skip);
    if (p->tile_x > 1 || p->tile_y > 1)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: tile_x/tile_y must be 0 or 1", call);
    return check_common(ctx, call, p->n_images, p->steps, p->guidance_scale, p->sampler, &p->output);
}

/* Edit/variation masks: a separate mask must match the image's size; the
 * alpha convention needs an image that has alpha. */
static diffuse_status check_mask(diffuse_ctx *ctx, const char *call, const diffuse_edit_params *p) {
    if (!p->mask) {
        if (p->image->format == DIFFUSE_PIXEL_RGB8)
            return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT,
                            "%s: no mask given and the image is RGB8: the alpha convention (alpha 0 = edit) needs "
                            "RGBA8 or BGRA8, or pass a mask image",
                            call);
        return DIFFUSE_OK;
    }
    diffuse_status st = check_image(ctx, call, "mask", p->mask);
    if (st != DIFFUSE_OK) return st;
    if (p->mask->width != p->image->width || p->mask->height != p->image->height)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: mask is %ux%u but the image is %ux%u", call,
                        p->mask->width, p->mask->height, p->image->width, p->image->height);
    return DIFFUSE_OK;
}

static diffuse_status check_edit(diffuse_ctx *ctx, const diffuse_edit_params *params, diffuse_edit_params *p) {
    static const char call[] = "diffuse_edit";
    DF_READ_PARAMS(call, diffuse_edit_params, output);
    diffuse_status st = check_image(ctx, call, "image", p->image);
    if (st == DIFFUSE_OK) st = check_input_size(ctx, call, p->image);
    if (st == DIFFUSE_OK) st = check_mask(ctx, call, p);
    if (st != DIFFUSE_OK) return st;
    if (!p->prompt) return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: prompt is NULL", call);
    if (!isfinite(p->mask_feather) || p->mask_feather < 0.0f || p->mask_feather > 256.0f)
        return ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: mask_feather %g not in 0..256", call, p->mask_feather);
    st = check_strength(ctx, call, p->strength, p->steps);
    if (st == DIFFUSE_OK) st = check_common(ctx, call, p->n_images, p->steps, p->guidance_scale, p->sampler, &p->output);
    return st;
}

static diffuse_status check_variation(diffuse_ctx *ctx, const diffuse_variation_params *params,
                                      diffuse_variation_params *p) {
    static const char call[] = "diffuse_variation";
    DF_READ_PARAMS(call, diffuse_variation_params, output);
    diffuse_status st = check_image(ctx, call, "image", p->image);
    if (st == DIFFUSE_OK) st = check_input_size(ctx, call, p->image);
    if (st == DIFFUSE_OK) st = check_strength(ctx, call, p->strength, p->steps);
    if (st == DIFFUSE_OK) st = check_common(ctx, call, p->n_images, p->steps, p->guidance_scale, p->sampler, &p->output);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Running the calls: blocking, or on a job's worker (job.c)                 */
/* ------------------------------------------------------------------------ */

static const char *const call_names[] = {"diffuse_generate", "diffuse_edit", "diffuse_variation"};

diffuse_status df_call_check(diffuse_ctx *ctx, df_call_kind kind, const void *params, void *p) {
    switch (kind) {
    case DF_CALL_GENERATE: return check_generate(ctx, params, p);
    case DF_CALL_EDIT: return check_edit(ctx, params, p);
    case DF_CALL_VARIATION: return check_variation(ctx, params, p);
    }
    return ctx_fail(ctx, DIFFUSE_ERR_INTERNAL, "unknown call kind %d", (int)kind);
}

diffuse_status df_call_run(diffuse_ctx *ctx, df_call_kind kind, const void *p, diffuse_images **out,
                           const df_run_hooks *hooks) {
    const char *call = call_names[kind];
    df_run run;
    diffuse_status st = run_begin(ctx, call, &run);
    if (st != DIFFUSE_OK) return st;
    if (hooks) {
        run.observe = hooks->observe;
        run.observe_user = hooks->observe_user;
        run.cancel = hooks->cancel;
        ctx->backend->cancel = hooks->cancel; /* checked inside long passes (VAE) */
    }
    switch (kind) {
    case DF_CALL_GENERATE: {
        const diffuse_generate_params *g = p;
        run.image_count = g->n_images;
        st = pipe_generate(&run, g, out);
        break;
    }
    case DF_CALL_EDIT: {
        const diffuse_edit_params *e = p;
        run.image_count = e->n_images;
        st = pipe_edit(&run, e, out);
        break;
    }
    case DF_CALL_VARIATION: {
        const diffuse_variation_params *v = p;
        run.image_count = v->n_images;
        st = pipe_variation(&run, v, out);
        break;
    }
    }
    ctx->backend->cancel = NULL;
    ctx->backend->seamless_x = ctx->backend->seamless_y = 0;
    pipe_run_cleanup(&run);
    return run_end(ctx, call, st);
}

/* The blocking calls: the context is held for the whole call, so a job of
 * the context (or a call from another thread) makes them DIFFUSE_ERR_BUSY. */
static diffuse_status df_blocking(diffuse_ctx *ctx, df_call_kind kind, const void *params,
                                  diffuse_images **out_images) {
    if (out_images) *out_images = NULL;
    if (!ctx) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (df_ctx_begin(ctx, NULL) != DIFFUSE_OK) return DIFFUSE_ERR_BUSY;
    df_error_clear(&ctx->err);
    union {
        diffuse_generate_params g;
        diffuse_edit_params e;
        diffuse_variation_params v;
    } p;
    diffuse_status st;
    if (!params || !out_images)
        st = ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: %s is NULL", call_names[kind],
                      params ? "out_images" : "params");
    else
        st = df_call_check(ctx, kind, params, &p);
    if (st == DIFFUSE_OK) st = df_call_run(ctx, kind, &p, out_images, NULL);
    df_ctx_end(ctx);
    return st;
}

DIFFUSE_API diffuse_status diffuse_generate(diffuse_ctx *ctx, const diffuse_generate_params *params,
                                            diffuse_images **out_images) {
    return df_blocking(ctx, DF_CALL_GENERATE, params, out_images);
}

DIFFUSE_API diffuse_status diffuse_edit(diffuse_ctx *ctx, const diffuse_edit_params *params,
                                        diffuse_images **out_images) {
    return df_blocking(ctx, DF_CALL_EDIT, params, out_images);
}

DIFFUSE_API diffuse_status diffuse_variation(diffuse_ctx *ctx, const diffuse_variation_params *params,
                                             diffuse_images **out_images) {
    return df_blocking(ctx, DF_CALL_VARIATION, params, out_images);
}

DIFFUSE_API diffuse_status diffuse_ctx_set_preview(diffuse_ctx *ctx, diffuse_preview_fn fn, void *user,
                                                   uint32_t every_k_steps) {
    static const char call[] = "diffuse_ctx_set_preview";
    if (!ctx) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (df_ctx_begin(ctx, NULL) != DIFFUSE_OK) return DIFFUSE_ERR_BUSY;
    diffuse_status st = DIFFUSE_OK;
    if (fn && every_k_steps == 0)
        st = ctx_fail(ctx, DIFFUSE_ERR_INVALID_ARGUMENT, "%s: every_k_steps is 0", call);
    else if (fn && !ctx->preview_fitted) {
        df_run run;
        st = run_begin(ctx, call, &run); /* only checks that the model can run */
        if (st == DIFFUSE_OK) st = pipe_fit_preview(ctx->model, ctx->backend, ctx->preview_proj, &ctx->err);
        if (st == DIFFUSE_OK)
            ctx->preview_fitted = 1;
        else
            st = run_end(ctx, call, st);
    }
    if (st == DIFFUSE_OK) {
        ctx->preview_fn = fn;
        ctx->preview_user = fn ? user : NULL;
        ctx->preview_every = fn ? every_k_steps : 0;
    }
    df_ctx_end(ctx);
    return st;
}

DIFFUSE_API diffuse_status diffuse_ctx_set_preview_decode(diffuse_ctx *ctx, uint32_t every_k_steps) {
    if (!ctx) return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (df_ctx_begin(ctx, NULL) != DIFFUSE_OK) return DIFFUSE_ERR_BUSY;
    ctx->preview_decode_every = every_k_steps;
    df_ctx_end(ctx);
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* Memory estimates and devices                                              */
/* ------------------------------------------------------------------------ */

DIFFUSE_API void diffuse_memory_query_init(diffuse_memory_query *q) {
    if (!q) return;
    memset(q, 0, sizeof *q);
    q->struct_size = sizeof *q;
    q->operation = DIFFUSE_OP_GENERATE;
    q->n_images = 1;
    q->guidance_scale = 7.5f;
    q->format = DIFFUSE_PIXEL_RGB8;
    q->device = DIFFUSE_DEVICE_AUTO;
}

DIFFUSE_API diffuse_status diffuse_estimate_memory(const diffuse_model *model, const diffuse_memory_query *query,
                                                   diffuse_memory_estimate *estimate) {
    if (!model || !query || !estimate ||
        estimate->struct_size < DF_V01_SIZE(diffuse_memory_estimate, fits))
        return DIFFUSE_ERR_INVALID_ARGUMENT;
    diffuse_memory_query q;
    diffuse_memory_query_init(&q);
    if (df_read_params(&q, sizeof q, query, DF_V01_SIZE(diffuse_memory_query, memory_budget)))
        return DIFFUSE_ERR_INVALID_ARGUMENT;
    if ((unsigned)q.operation > DIFFUSE_OP_VARIATION || (unsigned)q.format > DIFFUSE_PIXEL_BGRA8 ||
        (unsigned)q.device > DIFFUSE_DEVICE_CUDA || q.n_images < 1 || q.n_images > 16 || q.width > 8192 ||
        q.height > 8192 || q.width % 8 || q.height % 8 || !(q.guidance_scale == q.guidance_scale))
        return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (!model->unet_net || !model->vae_net || !model->text_net) return DIFFUSE_ERR_UNSUPPORTED;
    const int on_device = q.device == DIFFUSE_DEVICE_CUDA;
    const int f = (int)model->dims.vae_scale_factor, native = (int)model->dims.unet_sample_size * f;
    const int width = q.width ? (int)q.width : native, height = q.height ? (int)q.height : native;
    df_error err;
    df_error_clear(&err);
    df_run r;
    memset(&r, 0, sizeof r);
    r.model = model;
    r.err = &err;
    r.memory_budget = q.memory_budget;
    const uint64_t weights = on_device ? device_weight_bound(model) : 0;
    if (on_device && q.memory_budget) r.memory_budget = device_arena_budget(q.memory_budget, weights);
    pipe_estimate_t e;
    diffuse_status st = pipe_estimate(&r, q.operation, width, height, q.n_images, q.guidance_scale > 1.0f,
                                      q.format, &e);
    if (st != DIFFUSE_OK) return st;
    diffuse_memory_estimate v;
    memset(&v, 0, sizeof v);
    v.struct_size = estimate->struct_size < sizeof v ? estimate->struct_size : (uint32_t)sizeof v;
    diffuse_weight_type dtype;
    df_model_memory(model, &v.model_host_bytes, &dtype);
    v.context_host_bytes = on_device ? 0 : e.arena_bytes;
    v.run_host_bytes = e.host_bytes;
    v.output_bytes = e.output_bytes;
    v.host_bytes = v.model_host_bytes + v.context_host_bytes + v.run_host_bytes + v.output_bytes;
    v.device_bytes = on_device ? e.arena_bytes + weights : 0;
    v.vae_tiled = e.vae_tiled;
    v.fits = on_device && q.memory_budget ? r.memory_budget && e.fits : e.fits;
    memcpy(estimate, &v, v.struct_size);
    return DIFFUSE_OK;
}

/* Copies the library-size @src into the caller's @dst up to its struct_size. */
static diffuse_status put_device_info(const diffuse_device_info *src, diffuse_device_info *dst) {
    if (dst->struct_size < DF_V01_SIZE(diffuse_device_info, note)) return DIFFUSE_ERR_INVALID_ARGUMENT;
    const uint32_t n = dst->struct_size < sizeof *src ? dst->struct_size : (uint32_t)sizeof *src;
    memcpy(dst, src, n);
    dst->struct_size = n;
    return DIFFUSE_OK;
}

DIFFUSE_API diffuse_status diffuse_list_devices(diffuse_device_info *out, size_t capacity, size_t *count) {
    if (count) *count = 0;
    if (!count || (capacity && !out)) return DIFFUSE_ERR_INVALID_ARGUMENT;
    enum { MAX_GPUS = 16 };
    for (size_t i = 0; i < capacity && i < 1 + MAX_GPUS; i++)
        if (out[i].struct_size < DF_V01_SIZE(diffuse_device_info, note)) return DIFFUSE_ERR_INVALID_ARGUMENT;
    diffuse_device_info d[1 + MAX_GPUS];
    df_cpu_device_info(0, &d[0]);
    memset(&d[1], 0, sizeof d[1]);
    d[1].struct_size = sizeof d[1];
    d[1].device = DIFFUSE_DEVICE_CUDA;
    snprintf(d[1].name, sizeof d[1].name, "CUDA");
    int gpus = df_cuda_probe(d[1].note, sizeof d[1].note);
    if (gpus > MAX_GPUS) gpus = MAX_GPUS;
    /* One entry per GPU; without one a single CUDA entry says why. */
    for (int g = 0; g < gpus; g++) df_cuda_device_info(g, &d[1 + g]);
    const size_t n = 1 + (size_t)(gpus > 0 ? gpus : 1);
    for (size_t i = 0; i < capacity && i < n; i++) put_device_info(&d[i], &out[i]);
    *count = n;
    return DIFFUSE_OK;
}

DIFFUSE_API diffuse_status diffuse_ctx_get_device(const diffuse_ctx *ctx, diffuse_device *requested,
                                                  diffuse_device_info *info) {
    if (!ctx || (info && info->struct_size < DF_V01_SIZE(diffuse_device_info, note)))
        return DIFFUSE_ERR_INVALID_ARGUMENT;
    if (requested) *requested = ctx->params.device;
    if (info) {
        diffuse_device_info d;
        if (ctx_on_device(ctx))
            df_cuda_device_info(ctx->params.device_index, &d); /* a CUDA backend module's */
        else
            df_cpu_device_info(ctx->params.n_threads, &d);
        put_device_info(&d, info);
    }
    return DIFFUSE_OK;
}

DIFFUSE_API diffuse_status diffuse_ctx_get_memory(diffuse_ctx *ctx, diffuse_ctx_memory *out) {
    if (!ctx || !out || out->struct_size < DF_V01_SIZE(diffuse_ctx_memory, device_peak_bytes))
        return DIFFUSE_ERR_INVALID_ARGUMENT;
    diffuse_ctx_memory v;
    memset(&v, 0, sizeof v);
    v.struct_size = out->struct_size < sizeof v ? out->struct_size : (uint32_t)sizeof v;
    /* The backend's counters change only inside a call: read them between. */
    pthread_mutex_lock(&ctx->mu);
    const int busy = ctx->busy;
    if (!busy) {
        const bk_backend *bk = ctx->backend;
        v.device = ctx_on_device(ctx) ? DIFFUSE_DEVICE_CUDA : DIFFUSE_DEVICE_CPU;
        v.memory_budget = ctx->params.memory_budget;
        v.host_bytes = ctx_on_device(ctx) ? 0 : bk->arena_size;
        v.device_bytes = bk->device_bytes;
        v.device_peak_bytes = bk->device_peak;
    }
    pthread_mutex_unlock(&ctx->mu);
    if (busy) return DIFFUSE_ERR_BUSY;
    memcpy(out, &v, v.struct_size);
    return DIFFUSE_OK;
}
