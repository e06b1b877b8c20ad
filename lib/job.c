/*
 * job.c - asynchronous jobs: one generate/edit/variation call run on a
 * worker thread, polled, waited for, cancelled and collected by the host.
 *
 * Locking, race-free by design:
 *  - The context side (busy flag, ctx->job) is in api.c under the
 *    context's mutex (see job.h). diffuse_job_start_* marks the context busy
 *    before anything else and the worker clears the mark (df_ctx_end) as
 *    the last thing it does with the context.
 *  - job->cancel is a C11 atomic: diffuse_job_cancel (any thread) stores it
 *    with release order; pipe_progress on the worker loads it with acquire
 *    at every progress point, so a cancel is honoured within one step.
 *  - Everything else the worker changes after the start (state, the latest
 *    progress, status, result, message) is guarded by job->mu; job->done is
 *    signalled on job->cv when the run has finished. Poll, wait and result
 *    read under job->mu, so they see a consistent snapshot.
 *  - The params and their strings and images are deep-copied at the start
 *    and only read by the worker; the host's originals are never touched.
 *  - diffuse_job_free cancels, then joins the worker (pthread_join happens
 *    only there, once), then frees; diffuse_ctx_free on a busy context
 *    cancels the job through df_job_request_cancel under the context's
 *    mutex and waits until the worker has released the context.
 */
#include "job.h"

#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct diffuse_job {
    diffuse_ctx *ctx; /* used by the worker only, until df_ctx_end */
    df_call_kind kind;
    union {
        diffuse_generate_params g;
        diffuse_edit_params e;
        diffuse_variation_params v;
    } p;                   /* library-size copy; pointers below */
    char *prompt, *negative;
    diffuse_image image, mask; /* copies with their own pixel memory */

    atomic_int cancel;
    pthread_t thread;
    int thread_started;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* broadcast when done becomes 1 */
    int done;
    diffuse_job_state state;
    diffuse_progress last; /* latest progress report */
    diffuse_status status;
    diffuse_images *result;
    char msg[DF_ERR_MSG_MAX];
};

void df_job_request_cancel(diffuse_job *job) { atomic_store_explicit(&job->cancel, 1, memory_order_release); }

/* Progress hook, on the worker: keeps the latest report for diffuse_job_poll. */
static void job_observe(void *user, const diffuse_progress *p) {
    diffuse_job *job = user;
    pthread_mutex_lock(&job->mu);
    job->last = *p;
    pthread_mutex_unlock(&job->mu);
}

static void *job_main(void *arg) {
    diffuse_job *job = arg;
    pthread_mutex_lock(&job->mu);
    job->state = DIFFUSE_JOB_RUNNING;
    pthread_mutex_unlock(&job->mu);

    diffuse_images *images = NULL;
    diffuse_status st;
    if (atomic_load_explicit(&job->cancel, memory_order_acquire))
        st = DIFFUSE_CANCELLED; /* cancelled while queued: nothing ran */
    else {
        const df_run_hooks hooks = {job_observe, job, &job->cancel};
        st = df_call_run(job->ctx, job->kind, &job->p, &images, &hooks);
    }
    char msg[DF_ERR_MSG_MAX];
    if (st == DIFFUSE_OK)
        msg[0] = '\0';
    else if (st == DIFFUSE_CANCELLED && !df_ctx_message(job->ctx)[0])
        df_strlcpy(msg, "cancelled by diffuse_job_cancel before the run began", sizeof msg);
    else
        df_strlcpy(msg, df_ctx_message(job->ctx), sizeof msg);
    df_ctx_end(job->ctx); /* the context is free again; never touched after this */

    pthread_mutex_lock(&job->mu);
    job->status = st;
    job->result = images;
    memcpy(job->msg, msg, sizeof msg);
    job->state = st == DIFFUSE_OK ? DIFFUSE_JOB_DONE : st == DIFFUSE_CANCELLED ? DIFFUSE_JOB_CANCELLED
                                                                               : DIFFUSE_JOB_FAILED;
    job->done = 1;
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
    return NULL;
}

/* Deep copies of what the params point to. */
static int dup_str(const char *s, char **out) {
    *out = NULL;
    if (!s) return 0;
    size_t n = strlen(s) + 1;
    *out = malloc(n);
    if (!*out) return 1;
    memcpy(*out, s, n);
    return 0;
}

static int dup_image(const diffuse_image *src, diffuse_image *dst) {
    *dst = *src;
    /* Only the bytes the library reads: height - 1 full strides and one row. */
    const size_t bytes = (size_t)src->stride * (src->height - 1) + (size_t)src->width * df_bytes_per_pixel(src->format);
    dst->data = malloc(bytes);
    if (!dst->data) return 1;
    memcpy(dst->data, src->data, bytes);
    return 0;
}

static void job_destroy(diffuse_job *job) {
    if (!job) return;
    diffuse_images_free(job->result);
    free(job->prompt);
    free(job->negative);
    free(job->image.data);
    free(job->mask.data);
    pthread_cond_destroy(&job->cv);
    pthread_mutex_destroy(&job->mu);
    free(job);
}

/* Fills job->p from the checked @p, pointing to the job's own copies. */
static int job_copy_params(diffuse_job *job, const void *p) {
    int bad = 0;
    switch (job->kind) {
    case DF_CALL_GENERATE:
        job->p.g = *(const diffuse_generate_params *)p;
        bad = dup_str(job->p.g.prompt, &job->prompt) || dup_str(job->p.g.negative_prompt, &job->negative);
        job->p.g.prompt = job->prompt;
        job->p.g.negative_prompt = job->negative;
        break;
    case DF_CALL_EDIT:
        job->p.e = *(const diffuse_edit_params *)p;
        bad = dup_str(job->p.e.prompt, &job->prompt) || dup_str(job->p.e.negative_prompt, &job->negative) ||
              dup_image(job->p.e.image, &job->image) || (job->p.e.mask && dup_image(job->p.e.mask, &job->mask));
        job->p.e.prompt = job->prompt;
        job->p.e.negative_prompt = job->negative;
        job->p.e.image = &job->image;
        if (job->p.e.mask) job->p.e.mask = &job->mask;
        break;
    case DF_CALL_VARIATION:
        job->p.v = *(const diffuse_variation_params *)p;
        bad = dup_str(job->p.v.prompt, &job->prompt) || dup_str(job->p.v.negative_prompt, &job->negative) ||
              dup_image(job->p.v.image, &job->image);
        job->p.v.prompt = job->prompt;
        job->p.v.negative_prompt = job->negative;
        job->p.v.image = &job->image;
        break;
    }
    return bad;
}

static diffuse_status job_start(diffuse_ctx *ctx, df_call_kind kind, const void *params, diffuse_job **out_job) {
    if (out_job) *out_job = NULL;
    if (!ctx || !params || !out_job) return DIFFUSE_ERR_INVALID_ARGUMENT;
    diffuse_job *job = calloc(1, sizeof *job);
    if (!job) return DIFFUSE_ERR_OUT_OF_MEMORY;
    if (pthread_mutex_init(&job->mu, NULL) != 0) {
        free(job);
        return DIFFUSE_ERR_OUT_OF_MEMORY;
    }
    if (pthread_cond_init(&job->cv, NULL) != 0) {
        pthread_mutex_destroy(&job->mu);
        free(job);
        return DIFFUSE_ERR_OUT_OF_MEMORY;
    }
    atomic_init(&job->cancel, 0);
    job->ctx = ctx;
    job->kind = kind;
    job->state = DIFFUSE_JOB_QUEUED;
    job->last.struct_size = sizeof job->last;
    job->last.stage = DIFFUSE_STAGE_LOAD;

    diffuse_status st = df_ctx_begin(ctx, job);
    if (st != DIFFUSE_OK) { /* busy: leave the context and its message alone */
        job_destroy(job);
        return st;
    }
    union {
        diffuse_generate_params g;
        diffuse_edit_params e;
        diffuse_variation_params v;
    } p;
    st = df_call_check(ctx, kind, params, &p); /* records its message on the context */
    if (st == DIFFUSE_OK && job_copy_params(job, &p)) st = DIFFUSE_ERR_OUT_OF_MEMORY;
    if (st == DIFFUSE_OK) {
        if (pthread_create(&job->thread, NULL, job_main, job) != 0)
            st = DIFFUSE_ERR_INTERNAL;
        else
            job->thread_started = 1;
    }
    if (st != DIFFUSE_OK) {
        df_ctx_end(ctx);
        job_destroy(job);
        return st;
    }
    *out_job = job;
    return DIFFUSE_OK;
}

DIFFUSE_API diffuse_status diffuse_job_start_generate(diffuse_ctx *ctx, const diffuse_generate_params *params,
                                                      diffuse_job **out_job) {
    return job_start(ctx, DF_CALL_GENERATE, params, out_job);
}

DIFFUSE_API diffuse_status diffuse_job_start_edit(diffuse_ctx *ctx, const diffuse_edit_params *params,
                                                  diffuse_job **out_job) {
    return job_start(ctx, DF_CALL_EDIT, params, out_job);
}

DIFFUSE_API diffuse_status diffuse_job_start_variation(diffuse_ctx *ctx, const diffuse_variation_params *params,
                                                       diffuse_job **out_job) {
    return job_start(ctx, DF_CALL_VARIATION, params, out_job);
}

/* Smallest diffuse_job_status a host may pass: up to image_count. */
#define JOB_STATUS_MIN (offsetof(diffuse_job_status, image_count) + sizeof(uint32_t))

DIFFUSE_API diffuse_status diffuse_job_poll(const diffuse_job *job, diffuse_job_status *out) {
    if (!job || !out || out->struct_size < JOB_STATUS_MIN) return DIFFUSE_ERR_INVALID_ARGUMENT;
    diffuse_job_status s;
    memset(&s, 0, sizeof s);
    s.struct_size = out->struct_size < sizeof s ? out->struct_size : (uint32_t)sizeof s;
    diffuse_job *j = (diffuse_job *)job; /* the mutex, not the job, changes */
    pthread_mutex_lock(&j->mu);
    s.state = j->state;
    s.stage = j->last.stage;
    s.step = j->last.step;
    s.total = j->last.total;
    s.image_index = j->last.image_index;
    s.image_count = j->last.image_count;
    s.elapsed_seconds = j->last.elapsed_seconds;
    pthread_mutex_unlock(&j->mu);
    memcpy(out, &s, s.struct_size);
    return DIFFUSE_OK;
}

DIFFUSE_API diffuse_status diffuse_job_wait(diffuse_job *job, uint32_t timeout_ms) {
    if (!job) return DIFFUSE_ERR_INVALID_ARGUMENT;
    struct timespec until;
    if (timeout_ms != DIFFUSE_WAIT_FOREVER) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&job->mu);
    int timed_out = 0;
    while (!job->done && !timed_out) {
        if (timeout_ms == DIFFUSE_WAIT_FOREVER)
            pthread_cond_wait(&job->cv, &job->mu);
        else if (timeout_ms == 0 || pthread_cond_timedwait(&job->cv, &job->mu, &until) != 0)
            timed_out = !job->done;
    }
    const int done = job->done;
    pthread_mutex_unlock(&job->mu);
    return done ? DIFFUSE_OK : DIFFUSE_ERR_TIMEOUT;
}

DIFFUSE_API diffuse_status diffuse_job_cancel(diffuse_job *job) {
    if (!job) return DIFFUSE_ERR_INVALID_ARGUMENT;
    df_job_request_cancel(job);
    return DIFFUSE_OK;
}

DIFFUSE_API diffuse_status diffuse_job_result(diffuse_job *job, diffuse_images **out_images) {
    if (out_images) *out_images = NULL;
    if (!job || !out_images) return DIFFUSE_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&job->mu);
    diffuse_status st = DIFFUSE_ERR_BUSY;
    if (job->done) {
        st = job->status;
        *out_images = job->result;
        job->result = NULL;
    }
    pthread_mutex_unlock(&job->mu);
    return st;
}

DIFFUSE_API const char *diffuse_job_last_error(const diffuse_job *job) {
    if (!job) return "diffuse_job_last_error: job is NULL";
    diffuse_job *j = (diffuse_job *)job;
    pthread_mutex_lock(&j->mu);
    const char *m = j->done ? j->msg : "";
    pthread_mutex_unlock(&j->mu);
    return m; /* msg is written once, before done is set, and never again */
}

DIFFUSE_API void diffuse_job_free(diffuse_job *job) {
    if (!job) return;
    df_job_request_cancel(job); /* no effect on a finished job */
    if (job->thread_started) pthread_join(job->thread, NULL);
    job_destroy(job);
}
