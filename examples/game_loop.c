/*
 * game_loop.c - how a host with a frame loop (a game, an editor) generates
 * without ever blocking its frames, on the asynchronous job API: the main
 * loop ticks at a steady 60 Hz (absolute-deadline nanosleep), starts one
 * diffuse_job, polls it once a tick (diffuse_job_poll never blocks), shows
 * progress, shows the previews the context delivers (diffuse_ctx_set_preview:
 * here their size and mean colour, where a game would upload a texture), and
 * cancels on request (diffuse_job_cancel) - with no thread of its own: the
 * library runs the generation on its job's worker thread.
 *
 * It measures every tick and prints the worst: the interval between tick
 * starts (60 Hz = 16.7 ms) and the time the loop's own work took (poll,
 * preview pick-up, printing), which stays far below a frame while the
 * generation runs.
 *
 * Usage: game_loop MODEL [--steps S] [--cancel-after-steps K] [--print-every N]
 *                        [--preview-every K] [--hz H] [--max-work-ms M]
 *   --cancel-after-steps K  cancel once the job reports denoise step K
 *                           (Ctrl-C cancels too); exit 0 only if it ends CANCELLED
 *   --print-every N         print progress every N ticks (default 10)
 *   --preview-every K       preview every K denoising steps (default 1; 0 = off)
 *   --hz H                  tick rate (default 60)
 *   --max-work-ms M         exit 1 if one tick's own work took longer than M ms
 */
#include <diffuse.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct options {
    const char *model;
    unsigned steps;
    long cancel_after; /* -1: never cancel */
    unsigned print_every;
    unsigned preview_every;
    unsigned hz;
    double max_work_ms; /* 0: no limit */
} options;

/* The latest preview, published by the preview callback (on the job's worker
 * thread) and picked up by the main loop. Only small facts cross threads, as
 * atomics; a real host would copy the pixels into a texture staging buffer
 * under its own lock. `seq` is stored last (release) and read first
 * (acquire), so a changed seq means the other fields are from that preview
 * or a newer one. */
typedef struct preview_box {
    atomic_uint width, height, step, total;
    atomic_uint mean_rgb; /* 0x00RRGGBB */
    atomic_uint seq;      /* previews delivered so far */
} preview_box;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* On the job's worker thread: keep it short (it runs between denoising steps). */
static void on_preview(const diffuse_image *im, const diffuse_progress *p, void *user) {
    preview_box *box = user;
    uint64_t sum[3] = {0, 0, 0};
    const unsigned bpp = im->format == DIFFUSE_PIXEL_RGB8 ? 3u : 4u;
    for (uint32_t y = 0; y < im->height; y++) {
        const uint8_t *row = im->data + (size_t)y * im->stride;
        for (uint32_t x = 0; x < im->width; x++)
            for (int c = 0; c < 3; c++) sum[c] += row[(size_t)x * bpp + (unsigned)c];
    }
    const uint64_t n = (uint64_t)im->width * im->height;
    unsigned rgb = 0;
    for (int c = 0; c < 3; c++) rgb = rgb << 8 | (unsigned)(n ? (sum[c] + n / 2) / n : 0);
    atomic_store_explicit(&box->width, im->width, memory_order_relaxed);
    atomic_store_explicit(&box->height, im->height, memory_order_relaxed);
    atomic_store_explicit(&box->step, p->step, memory_order_relaxed);
    atomic_store_explicit(&box->total, p->total, memory_order_relaxed);
    atomic_store_explicit(&box->mean_rgb, rgb, memory_order_relaxed);
    atomic_fetch_add_explicit(&box->seq, 1, memory_order_release);
}

static int parse_args(int argc, char **argv, options *o) {
    o->model = NULL;
    o->steps = 8;
    o->cancel_after = -1;
    o->print_every = 10;
    o->preview_every = 1;
    o->hz = 60;
    o->max_work_ms = 0;
    for (int i = 1; i < argc; i++) {
        const int has_value = i + 1 < argc;
        const char *a = argv[i];
        if (strcmp(a, "--steps") == 0 && has_value) o->steps = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--cancel-after-steps") == 0 && has_value) o->cancel_after = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--print-every") == 0 && has_value) o->print_every = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--preview-every") == 0 && has_value) o->preview_every = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--hz") == 0 && has_value) o->hz = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--max-work-ms") == 0 && has_value) o->max_work_ms = strtod(argv[++i], NULL);
        else if (a[0] != '-' && !o->model) o->model = a;
        else return -1;
    }
    if (!o->model || o->steps == 0 || o->print_every == 0 || o->hz == 0 || o->hz > 1000 || o->max_work_ms < 0)
        return -1;
    return 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void add_ns(struct timespec *t, long ns) {
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

/* Sleeps until the absolute time @t (CLOCK_MONOTONIC): ticks stay on a fixed
 * grid whatever each tick's work took. */
static void sleep_until(const struct timespec *t) {
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, t, NULL) == EINTR) {
    }
}

typedef struct tick_stats {
    unsigned long ticks;
    double worst_interval_ms, sum_interval_ms, worst_work_ms;
    unsigned long late; /* intervals over 1.5 periods */
} tick_stats;

static int finished(diffuse_job_state s) {
    return s == DIFFUSE_JOB_DONE || s == DIFFUSE_JOB_FAILED || s == DIFFUSE_JOB_CANCELLED;
}

/* The frame loop: one poll per tick until the job has finished. */
static diffuse_job_status frame_loop(diffuse_job *job, preview_box *box, const options *o, tick_stats *st) {
    static const char *const stages[] = {"load", "text", "encode", "denoise", "decode"};
    const long period_ns = 1000000000L / (long)o->hz;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    unsigned seen_seq = 0;
    int cancel_sent = 0;
    double prev_start = -1;
    diffuse_job_status s;
    memset(&s, 0, sizeof s);
    memset(st, 0, sizeof *st);
    for (;;) {
        const double start = now_ms();
        if (prev_start >= 0) {
            const double interval = start - prev_start;
            st->sum_interval_ms += interval;
            if (interval > st->worst_interval_ms) st->worst_interval_ms = interval;
            if (interval > 1.5e-6 * (double)period_ns) st->late++;
        }
        prev_start = start;
        st->ticks++;

        /* --- the tick's work: input, the job, "drawing" --- */
        s.struct_size = sizeof s;
        if (diffuse_job_poll(job, &s) != DIFFUSE_OK) {
            fprintf(stderr, "diffuse_job_poll failed\n");
            s.state = DIFFUSE_JOB_FAILED;
            break;
        }
        const char *stage = (unsigned)s.stage < 5 ? stages[s.stage] : "?";
        const int want_cancel =
            interrupted || (o->cancel_after >= 0 && s.stage == DIFFUSE_STAGE_DENOISE && s.step >= (unsigned long)o->cancel_after);
        if (want_cancel && !cancel_sent && !finished(s.state)) {
            diffuse_job_cancel(job); /* returns at once; the run stops within a step */
            cancel_sent = 1;
            printf("tick %lu: cancel requested at %s step %u/%u\n", st->ticks, stage, s.step, s.total);
        }
        const unsigned seq = atomic_load_explicit(&box->seq, memory_order_acquire);
        if (seq != seen_seq) { /* a new preview: a game would upload it as a texture now */
            seen_seq = seq;
            const unsigned rgb = atomic_load_explicit(&box->mean_rgb, memory_order_relaxed);
            printf("tick %lu: preview %ux%u at step %u/%u, mean colour (%u, %u, %u)%s\n", st->ticks,
                   atomic_load_explicit(&box->width, memory_order_relaxed),
                   atomic_load_explicit(&box->height, memory_order_relaxed),
                   atomic_load_explicit(&box->step, memory_order_relaxed),
                   atomic_load_explicit(&box->total, memory_order_relaxed), rgb >> 16, rgb >> 8 & 255u, rgb & 255u,
                   seq > 1 ? "" : " (first)");
        }
        if (st->ticks % o->print_every == 0 || finished(s.state))
            printf("tick %lu: %s %u/%u (image %u of %u)\n", st->ticks, stage, s.step, s.total, s.image_index + 1,
                   s.image_count);
        fflush(stdout);
        const double work = now_ms() - start;
        if (work > st->worst_work_ms) st->worst_work_ms = work;
        if (finished(s.state)) break;
        /* --- end of the tick's work --- */

        add_ns(&next, period_ns);
        sleep_until(&next);
    }
    return s;
}

int main(int argc, char **argv) {
    options o;
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr,
                "usage: %s MODEL [--steps S] [--cancel-after-steps K] [--print-every N] [--preview-every K] "
                "[--hz H] [--max-work-ms M]\n",
                argv[0]);
        return 2;
    }
    signal(SIGINT, on_sigint);
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
    diffuse_ctx *ctx = NULL;
    st = diffuse_ctx_create(model, NULL, &ctx);
    if (st != DIFFUSE_OK) {
        fprintf(stderr, "context failed: %s\n", diffuse_status_string(st));
        diffuse_model_free(model);
        return 1;
    }
    static preview_box box; /* outlives the job: the context is freed first */
    if (o.preview_every > 0) {
        st = diffuse_ctx_set_preview(ctx, on_preview, &box, o.preview_every);
        if (st != DIFFUSE_OK) fprintf(stderr, "no previews: %s: %s\n", diffuse_status_string(st), diffuse_ctx_last_error(ctx));
    }

    diffuse_generate_params gp;
    diffuse_generate_params_init(&gp);
    gp.prompt = "a large blue square at the center on a white background";
    gp.steps = o.steps;
    gp.seed = 7;
    diffuse_job *job = NULL;
    int rc = 1;
    const double t0 = now_ms();
    st = diffuse_job_start_generate(ctx, &gp, &job); /* gp may go away now: the library copied it */
    const double start_ms = now_ms() - t0;
    if (st != DIFFUSE_OK) {
        fprintf(stderr, "start failed: %s: %s\n", diffuse_status_string(st), diffuse_ctx_last_error(ctx));
    } else {
        tick_stats ts;
        const diffuse_job_status end = frame_loop(job, &box, &o, &ts);
        diffuse_images *images = NULL;
        const diffuse_status result = diffuse_job_result(job, &images);
        const double period = 1000.0 / o.hz;
        printf("ticks: %lu at %u Hz (period %.1f ms): mean interval %.2f ms, worst interval %.2f ms, "
               "%lu late (> 1.5 periods); worst tick work %.3f ms; job start %.3f ms\n",
               ts.ticks, o.hz, period, ts.ticks > 1 ? ts.sum_interval_ms / (double)(ts.ticks - 1) : 0.0,
               ts.worst_interval_ms, ts.late, ts.worst_work_ms, start_ms);
        printf("previews shown: %u\n", atomic_load(&box.seq));
        const int want_cancel = o.cancel_after >= 0 || interrupted;
        if (result == DIFFUSE_OK && images && images->count > 0) {
            const diffuse_image *im = &images->images[0];
            printf("done after %lu ticks: %ux%u image, seed %llu\n", ts.ticks, im->width, im->height,
                   (unsigned long long)images->seeds[0]);
            if (want_cancel) printf("expected a cancelled run, but it finished first\n");
            rc = want_cancel;
        } else {
            printf("%s after %lu ticks at step %u/%u: %s\n", diffuse_status_string(result), ts.ticks, end.step,
                   end.total, diffuse_job_last_error(job));
            rc = !(want_cancel && result == DIFFUSE_CANCELLED);
        }
        if (o.max_work_ms > 0 && ts.worst_work_ms > o.max_work_ms) {
            printf("FAIL: a tick's own work took %.3f ms, over --max-work-ms %.1f\n", ts.worst_work_ms, o.max_work_ms);
            rc = 1;
        }
        if (o.max_work_ms > 0 && start_ms > o.max_work_ms) {
            printf("FAIL: starting the job took %.3f ms, over --max-work-ms %.1f\n", start_ms, o.max_work_ms);
            rc = 1;
        }
        diffuse_images_free(images);
        diffuse_job_free(job);
    }
    diffuse_ctx_free(ctx);
    diffuse_model_free(model);
    return rc;
}
