/*
 * game_loop.c - how a host with a frame loop (a game, an editor) can use the
 * blocking diffuse_generate without freezing: a worker thread makes the call,
 * the progress callback publishes the step through atomics, and the main loop
 * keeps ticking every 10 ms, showing progress and cancelling on request.
 * Usage: game_loop MODEL [--steps S] [--cancel-after-steps K] [--print-every N]
 */
#include <diffuse.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What the worker and the main loop share. The atomics are written by the
 * progress callback (on the worker thread) and read by the main loop; the
 * result fields are read only after `done` is set. */
typedef struct job {
    diffuse_ctx *ctx;
    diffuse_generate_params params;
    atomic_uint stage;     /* diffuse_stage of the last report */
    atomic_uint step;      /* step/total of the last report */
    atomic_uint total;
    atomic_int cancel;     /* set by the main loop; the callback returns it */
    atomic_int done;       /* set by the worker when the call returned */
    diffuse_status status; /* result, valid once done */
    diffuse_images *images;
    char message[512];
} job;

typedef struct options {
    const char *model;
    unsigned steps;
    long cancel_after; /* -1: never cancel */
    unsigned print_every;
} options;

/* Runs on the worker thread, inside diffuse_generate. */
static int on_progress(const diffuse_progress *p, void *user) {
    job *j = user;
    atomic_store(&j->stage, (unsigned)p->stage);
    atomic_store(&j->total, p->total);
    atomic_store(&j->step, p->step);
    return atomic_load(&j->cancel);
}

static void *worker(void *arg) {
    job *j = arg;
    j->status = diffuse_generate(j->ctx, &j->params, &j->images);
    if (j->status != DIFFUSE_OK) snprintf(j->message, sizeof j->message, "%s", diffuse_ctx_last_error(j->ctx));
    atomic_store(&j->done, 1);
    return NULL;
}

static int parse_args(int argc, char **argv, options *o) {
    o->model = NULL;
    o->steps = 8;
    o->cancel_after = -1;
    o->print_every = 10;
    for (int i = 1; i < argc; i++) {
        const int has_value = i + 1 < argc;
        const char *a = argv[i];
        if (strcmp(a, "--steps") == 0 && has_value) o->steps = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--cancel-after-steps") == 0 && has_value) o->cancel_after = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--print-every") == 0 && has_value) o->print_every = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (a[0] != '-' && !o->model) o->model = a;
        else return -1;
    }
    if (!o->model || o->steps == 0 || o->print_every == 0) return -1;
    return 0;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The frame loop: ticks until the worker is done. Returns the frames drawn. */
static unsigned long frame_loop(job *j, const options *o) {
    static const char *const stages[] = {"load", "text", "encode", "denoise", "decode"};
    unsigned long frame = 0;
    while (!atomic_load(&j->done)) {
        frame++;
        const unsigned stage = atomic_load(&j->stage), step = atomic_load(&j->step), total = atomic_load(&j->total);
        if (o->cancel_after >= 0 && !atomic_load(&j->cancel) && stage == DIFFUSE_STAGE_DENOISE &&
            step >= (unsigned long)o->cancel_after) {
            atomic_store(&j->cancel, 1);
            printf("frame %lu: cancel requested at denoise step %u/%u\n", frame, step, total);
        }
        if (frame % o->print_every == 0)
            printf("frame %lu: %s %u/%u\n", frame, stage < 5 ? stages[stage] : "?", step, total);
        fflush(stdout);
        sleep_ms(10); /* the rest of a frame: input, physics, drawing */
    }
    return frame;
}

/* Says what happened; returns the exit status (0 when the outcome is the
 * one the options asked for: an image, or a cancelled run). */
static int report(const job *j, const options *o, unsigned long frames) {
    const int want_cancel = o->cancel_after >= 0;
    if (j->status == DIFFUSE_OK) {
        const diffuse_image *im = &j->images->images[0];
        printf("done after %lu frames: %ux%u image, seed %llu\n", frames, im->width, im->height,
               (unsigned long long)j->images->seeds[0]);
        if (want_cancel) printf("expected a cancelled run, but it finished first\n");
        return want_cancel;
    }
    printf("%s after %lu frames at step %u/%u: %s\n", diffuse_status_string(j->status), frames, atomic_load(&j->step),
           atomic_load(&j->total), j->message);
    return !(want_cancel && j->status == DIFFUSE_CANCELLED);
}

int main(int argc, char **argv) {
    options o;
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "usage: %s MODEL [--steps S] [--cancel-after-steps K] [--print-every N]\n", argv[0]);
        return 2;
    }
    char error[1024] = "";
    diffuse_model_params mp;
    diffuse_model_params_init(&mp);
    mp.error_buf = error;
    mp.error_buf_size = sizeof error;
    diffuse_model *model = NULL;
    diffuse_status st = diffuse_model_load(o.model, &mp, &model);
    if (st != DIFFUSE_OK) {
        fprintf(stderr, "load failed: %s: %s\n", diffuse_status_string(st), error);
        return 1;
    }
    job *j = calloc(1, sizeof *j);
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.progress_fn = on_progress;
    cp.progress_user = j;
    st = j ? diffuse_ctx_create(model, &cp, &j->ctx) : DIFFUSE_ERR_OUT_OF_MEMORY;
    int rc = 1;
    pthread_t thread;
    if (st == DIFFUSE_OK) {
        diffuse_generate_params_init(&j->params);
        j->params.prompt = "a large blue square at the center on a white background";
        j->params.steps = o.steps;
        j->params.seed = 7;
        if (pthread_create(&thread, NULL, worker, j) == 0) {
            const unsigned long frames = frame_loop(j, &o);
            pthread_join(thread, NULL);
            rc = report(j, &o, frames);
        }
    } else {
        fprintf(stderr, "context failed: %s\n", diffuse_status_string(st));
    }
    if (j) {
        diffuse_images_free(j->images);
        diffuse_ctx_free(j->ctx);
    }
    free(j);
    diffuse_model_free(model);
    return rc;
}
