/*
 * test_embed.c - what hosts that embed libdiffuse rely on (issue 8), on the
 * tiny fixtures:
 *  - diffuse_estimate_memory against the measured peak resident memory of a
 *    fresh process (within 10 %), for generate, variation and edit, and its
 *    tiling / budget answers;
 *  - diffuse_model_get_info's weight dtype and host bytes;
 *  - caller-supplied output buffers (output_images): same pixels as
 *    library-allocated images, rows' padding untouched, bad buffers refused,
 *    diffuse_images_free leaving them alone;
 *  - a job cancelled while the VAE decodes stops inside the decode;
 *  - model loading reports LOAD progress and can be cancelled;
 *  - diffuse_list_devices / diffuse_ctx_get_device, and the CUDA module
 *    probe's messages;
 *  - load -> generate -> free in a loop returns resident memory to its
 *    baseline;
 *  - seamless tiling on the demo model: no seam where the image wraps.
 * RSS-based checks are skipped (and say so) under AddressSanitizer, whose
 * shadow memory and quarantine make resident sizes meaningless.
 */
#include <diffuse.h>

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#include "check.h"

static const char *fixture(const char *name) {
    static char path[4][4096];
    static int k;
    const char *d = getenv("DIFFUSE_FIXTURES");
    char *p = path[k++ % 4];
    snprintf(p, sizeof path[0], "%s/models/%s", d ? d : "tests/fixtures", name);
    return p;
}

static diffuse_model *load(const char *path) {
    diffuse_model *m = NULL;
    diffuse_status st = diffuse_model_load(path, NULL, &m);
    CHECK(st == DIFFUSE_OK, "load %s: %s", path, diffuse_status_string(st));
    return m;
}

static diffuse_ctx *make_ctx(const diffuse_model *m) {
    diffuse_ctx *c = NULL;
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = DIFFUSE_DEVICE_CPU;
    CHECK_STATUS(diffuse_ctx_create(m, &cp, &c), DIFFUSE_OK);
    return c;
}

/* Fresh random pixels (never constant). */
static void fill_random(uint8_t *p, size_t n, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (uint8_t)(s >> 24);
    }
}

/* /proc/self/status field in bytes (VmRSS, VmHWM). */
static long long status_bytes(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    const size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            kb = atoll(line + n + 1);
            break;
        }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0). */
static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Memory estimate vs measured peak                                          */
/* ------------------------------------------------------------------------ */

typedef struct est_case {
    const char *model;
    diffuse_operation op;
    uint32_t side;
    uint32_t n;
    float guidance;
} est_case;

/* Runs @c once in this (fresh, forked) process: a warm-up generate of the
 * same size on another model instance, so the thread pools, their stacks and
 * OpenBLAS's per-thread GEMM buffers (touched as far as the GEMM sizes need)
 * are part of the baseline, then the measured call on a fresh model and
 * context. Exit status 0 = within 10 %. */
static int estimate_child(const est_case *c) {
    {
        diffuse_model *w = load(fixture("tiny-sd1"));
        diffuse_ctx *x = make_ctx(w);
        diffuse_generate_params g;
        diffuse_generate_params_init(&g);
        g.prompt = "warm up";
        g.steps = 1;
        g.width = g.height = c->side;
        diffuse_images *im = NULL;
        CHECK_STATUS(diffuse_generate(x, &g, &im), DIFFUSE_OK);
        diffuse_images_free(im);
        diffuse_ctx_free(x);
        diffuse_model_free(w);
    }
    const long long base = status_bytes("VmRSS");
    if (base < 0 || reset_peak() != 0) {
        printf("SKIP estimate: /proc/self/status or clear_refs unavailable\n");
        return 2;
    }
    diffuse_model *m = load(fixture(c->model));
    if (!m) return 1;
    diffuse_memory_query q;
    diffuse_memory_query_init(&q);
    q.operation = c->op;
    q.width = q.height = c->side;
    q.n_images = c->n;
    q.guidance_scale = c->guidance;
    diffuse_memory_estimate e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &e), DIFFUSE_OK);
    diffuse_ctx *x = make_ctx(m);
    const size_t pix = (size_t)c->side * c->side * 4;
    uint8_t *in = malloc(pix), *mask = malloc(pix);
    fill_random(in, pix, 7);
    for (size_t i = 0; i < pix; i++) mask[i] = (i / 4) % c->side < c->side / 2 ? 255 : 0;
    diffuse_image image = {c->side, c->side, c->side * 4, DIFFUSE_PIXEL_RGBA8, DIFFUSE_ORIGIN_TOP_LEFT,
                           DIFFUSE_COLOR_SRGB, in};
    diffuse_image mimg = image;
    mimg.data = mask;
    diffuse_images *im = NULL;
    diffuse_status st = DIFFUSE_ERR_INTERNAL;
    if (c->op == DIFFUSE_OP_GENERATE) {
        diffuse_generate_params g;
        diffuse_generate_params_init(&g);
        g.prompt = "a red circle";
        g.steps = 1;
        g.n_images = c->n;
        g.guidance_scale = c->guidance;
        g.width = g.height = c->side;
        st = diffuse_generate(x, &g, &im);
    } else if (c->op == DIFFUSE_OP_VARIATION) {
        diffuse_variation_params v;
        diffuse_variation_params_init(&v);
        v.image = &image;
        v.prompt = "a blue square";
        v.steps = 2;
        v.strength = 1.0f;
        v.n_images = c->n;
        v.guidance_scale = c->guidance;
        st = diffuse_variation(x, &v, &im);
    } else {
        diffuse_edit_params ed;
        diffuse_edit_params_init(&ed);
        ed.image = &image;
        ed.mask = &mimg;
        ed.prompt = "a green star";
        ed.steps = 2;
        ed.n_images = c->n;
        ed.guidance_scale = c->guidance;
        st = diffuse_edit(x, &ed, &im);
    }
    CHECK(st == DIFFUSE_OK, "run: %s (%s)", diffuse_status_string(st), diffuse_ctx_last_error(x));
    const long long peak = status_bytes("VmHWM");
    const double measured = (double)(peak - base), est = (double)e.host_bytes;
    const double rel = (measured - est) / est;
    printf("estimate %-10s %-9s %4ux%-4u n=%u cfg=%d: estimated %.1f MiB (model %.1f, arena %.1f, buffers %.1f, "
           "images %.1f), measured peak %.1f MiB over the baseline: %+.1f %%\n",
           c->model, c->op == DIFFUSE_OP_GENERATE ? "generate" : c->op == DIFFUSE_OP_EDIT ? "edit" : "variation",
           c->side, c->side, c->n, c->guidance > 1, est / 1048576.0, e.model_host_bytes / 1048576.0,
           e.context_host_bytes / 1048576.0, e.run_host_bytes / 1048576.0, e.output_bytes / 1048576.0,
           measured / 1048576.0, 100.0 * rel);
    CHECK(fabs(rel) <= 0.10, "estimate off by %.1f %% (limit 10 %%)", 100.0 * rel);
    diffuse_images_free(im);
    diffuse_ctx_free(x);
    diffuse_model_free(m);
    free(in);
    free(mask);
    return failures ? 1 : 0;
}

static void test_estimate_vs_peak(void) {
    if (UNDER_ASAN) {
        printf("SKIP estimate vs peak RSS: not meaningful under AddressSanitizer\n");
        return;
    }
    static const est_case cases[] = {
        /* tiny-sd1's VAE has scale factor 2: a 160x160 image is 80x80
         * latents, 6400 tokens of self-attention in the UNet */
        {"tiny-sd1", DIFFUSE_OP_GENERATE, 160, 1, 1.0f},
        {"tiny-sd1", DIFFUSE_OP_GENERATE, 128, 2, 7.5f},
        {"tiny-sd1", DIFFUSE_OP_VARIATION, 128, 1, 7.5f},
        {"tiny-sd1-inpaint", DIFFUSE_OP_EDIT, 128, 1, 7.5f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fflush(stdout);
        pid_t pid = fork(); /* before this process has started any thread pool */
        if (pid == 0) _exit(estimate_child(&cases[i]));
        int ws = 0;
        CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid, "fork/wait failed");
        CHECK(WIFEXITED(ws) && (WEXITSTATUS(ws) == 0 || WEXITSTATUS(ws) == 2), "estimate case %zu failed", i);
    }
}

/* Plan-only answers: tiling under a budget, argument checks. */
static void test_estimate_api(void) {
    diffuse_model *m = load(fixture("tiny-sd1"));
    diffuse_model *inp = load(fixture("tiny-sd1-inpaint"));
    if (!m || !inp) return;
    diffuse_memory_query q;
    diffuse_memory_query_init(&q);
    CHECK(q.struct_size == sizeof q && q.n_images == 1 && q.guidance_scale > 1.0f, "query defaults");
    diffuse_memory_estimate e, small;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    q.width = q.height = 1024;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &e), DIFFUSE_OK);
    CHECK(e.fits && e.device_bytes == 0, "no budget: fits, no device memory");
    CHECK(e.host_bytes == e.model_host_bytes + e.context_host_bytes + e.run_host_bytes + e.output_bytes,
          "host_bytes is the sum of its parts");
    CHECK(e.output_bytes == (uint64_t)1024 * 1024 * 3, "output bytes %llu", (unsigned long long)e.output_bytes);
    /* A budget below the whole decode: the estimate tiles, and matches what a
     * context with that budget does (it runs). */
    /* A budget below the whole pass: the VAE tiles (512x512 without guidance,
     * where the VAE decode needs most of the arena); with the tiled plan's
     * own size as the budget it fits. */
    q.width = q.height = 512;
    q.guidance_scale = 1.0f;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &e), DIFFUSE_OK);
    q.memory_budget = e.context_host_bytes / 2;
    small = e;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &small), DIFFUSE_OK);
    printf("estimate 512x512: whole %.1f MiB arena (tiled %d); budget %.1f MiB: %.1f MiB arena (tiled %d, fits %d)\n",
           e.context_host_bytes / 1048576.0, e.vae_tiled, q.memory_budget / 1048576.0,
           small.context_host_bytes / 1048576.0, small.vae_tiled, small.fits);
    CHECK(!e.vae_tiled && small.vae_tiled && small.context_host_bytes < e.context_host_bytes &&
              small.fits == (small.context_host_bytes <= q.memory_budget),
          "under a budget below the whole decode the VAE tiles");
    q.memory_budget = small.context_host_bytes;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &small), DIFFUSE_OK);
    CHECK(small.vae_tiled && small.fits, "the tiled plan fits its own size");
    q.memory_budget = 1 << 20;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &small), DIFFUSE_OK);
    CHECK(!small.fits, "1 MiB budget cannot fit");
    {   /* the same budget on a context refuses the run before starting */
        diffuse_ctx *c = NULL;
        diffuse_ctx_params cp;
        diffuse_ctx_params_init(&cp);
        cp.device = DIFFUSE_DEVICE_CPU;
        cp.memory_budget = 1 << 20;
        CHECK_STATUS(diffuse_ctx_create(m, &cp, &c), DIFFUSE_OK);
        diffuse_generate_params g;
        diffuse_generate_params_init(&g);
        g.width = g.height = 1024;
        g.steps = 1;
        diffuse_images *im = NULL;
        CHECK_STATUS(diffuse_generate(c, &g, &im), DIFFUSE_ERR_OUT_OF_MEMORY);
        diffuse_ctx_free(c);
    }
    q.memory_budget = 0;
    q.width = 100; /* not a multiple of 8 */
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &e), DIFFUSE_ERR_INVALID_ARGUMENT);
    q.width = 0;
    q.n_images = 17;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &e), DIFFUSE_ERR_INVALID_ARGUMENT);
    q.n_images = 1;
    q.operation = (diffuse_operation)7;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &e), DIFFUSE_ERR_INVALID_ARGUMENT);
    q.operation = DIFFUSE_OP_VARIATION;
    CHECK_STATUS(diffuse_estimate_memory(inp, &q, &e), DIFFUSE_ERR_UNSUPPORTED);
    q.operation = DIFFUSE_OP_EDIT;
    CHECK_STATUS(diffuse_estimate_memory(inp, &q, &e), DIFFUSE_OK);
    /* device CUDA (since 0.4): the arena moves to the device, with the
     * weights' device copy; no GPU is needed to estimate */
    const uint64_t cpu_arena = e.context_host_bytes, cpu_host = e.host_bytes;
    q.device = DIFFUSE_DEVICE_CUDA;
    CHECK_STATUS(diffuse_estimate_memory(inp, &q, &e), DIFFUSE_OK);
    CHECK(e.context_host_bytes == 0 && e.device_bytes > cpu_arena && e.host_bytes == cpu_host - cpu_arena && e.fits,
          "CUDA estimate: device %llu (CPU arena %llu), host %llu", (unsigned long long)e.device_bytes,
          (unsigned long long)cpu_arena, (unsigned long long)e.host_bytes);
    q.memory_budget = e.device_bytes - 1;
    CHECK_STATUS(diffuse_estimate_memory(inp, &q, &e), DIFFUSE_OK);
    CHECK(!e.fits || e.vae_tiled, "CUDA estimate one byte under: fits %d tiled %d", e.fits, e.vae_tiled);
    q.memory_budget = 0;
    q.device = DIFFUSE_DEVICE_AUTO;
    e.struct_size = 8;
    CHECK_STATUS(diffuse_estimate_memory(m, &q, &e), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(diffuse_estimate_memory(NULL, &q, &e), DIFFUSE_ERR_INVALID_ARGUMENT);
    diffuse_memory_query_init(NULL);

    /* model info: stored dtype and host bytes */
    diffuse_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_STATUS(diffuse_model_get_info(m, &info), DIFFUSE_OK);
    CHECK(info.weight_dtype == DIFFUSE_WEIGHTS_F32 || info.weight_dtype == DIFFUSE_WEIGHTS_F16,
          "weight dtype %d", (int)info.weight_dtype);
    CHECK(info.host_bytes > 0 && info.host_bytes <= 2 * info.weight_bytes, "host bytes %llu vs file %llu",
          (unsigned long long)info.host_bytes, (unsigned long long)info.weight_bytes);
    diffuse_model_free(m);
    diffuse_model_free(inp);
}

/* ------------------------------------------------------------------------ */
/* Caller-supplied output buffers                                            */
/* ------------------------------------------------------------------------ */

static void test_output_buffers(void) {
    diffuse_model *m = load(fixture("tiny-sd1"));
    if (!m) return;
    diffuse_ctx *c = make_ctx(m);
    const uint32_t W = 64, H = 48, n = 2, stride = W * 4 + 12; /* padded rows */
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    g.prompt = "a yellow star";
    g.steps = 2;
    g.n_images = n;
    g.width = W;
    g.height = H;
    g.seed = 99;
    g.output.format = DIFFUSE_PIXEL_BGRA8;
    g.output.origin = DIFFUSE_ORIGIN_BOTTOM_LEFT;
    diffuse_images *ref = NULL;
    CHECK_STATUS(diffuse_generate(c, &g, &ref), DIFFUSE_OK);

    uint8_t *buf[2];
    diffuse_image into[2];
    for (uint32_t i = 0; i < n; i++) {
        buf[i] = malloc((size_t)stride * H);
        memset(buf[i], 0xA5, (size_t)stride * H); /* poison */
        into[i] = (diffuse_image){W, H, stride, DIFFUSE_PIXEL_BGRA8, DIFFUSE_ORIGIN_BOTTOM_LEFT, DIFFUSE_COLOR_SRGB,
                                  buf[i]};
    }
    g.output.format = DIFFUSE_PIXEL_RGB8; /* ignored: the buffers' own format wins */
    g.output.origin = DIFFUSE_ORIGIN_TOP_LEFT;
    g.output_images = into;
    diffuse_images *got = NULL;
    CHECK_STATUS(diffuse_generate(c, &g, &got), DIFFUSE_OK);
    if (got && ref) {
        CHECK(got->count == n, "count %u", got->count);
        for (uint32_t i = 0; i < n; i++) {
            CHECK(got->images[i].data == buf[i], "image %u points at the caller's buffer", i);
            CHECK(got->seeds[i] == ref->seeds[i], "seed %u", i);
            int same = 1, pad_ok = 1;
            for (uint32_t y = 0; y < H; y++) {
                same &= memcmp(buf[i] + (size_t)y * stride, ref->images[i].data + (size_t)y * ref->images[i].stride,
                               W * 4) == 0;
                for (uint32_t k = W * 4; k < stride; k++) pad_ok &= buf[i][(size_t)y * stride + k] == 0xA5;
            }
            CHECK(same, "image %u: caller buffer differs from the library-allocated image", i);
            CHECK(pad_ok, "image %u: bytes between rows were written", i);
        }
    }
    diffuse_images_free(got); /* must not free buf[] (ASan would report it) */
    /* bad buffers */
    into[1].width = W + 8;
    got = NULL;
    CHECK_STATUS(diffuse_generate(c, &g, &got), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(got == NULL && strstr(diffuse_ctx_last_error(c), "output_images[1]"), "message: %s",
          diffuse_ctx_last_error(c));
    into[1].width = W;
    into[0].stride = W * 4 - 1;
    CHECK_STATUS(diffuse_generate(c, &g, &got), DIFFUSE_ERR_INVALID_ARGUMENT);
    into[0].stride = stride;
    into[0].data = NULL;
    CHECK_STATUS(diffuse_generate(c, &g, &got), DIFFUSE_ERR_INVALID_ARGUMENT);
    into[0].data = buf[0];
    into[0].format = (diffuse_pixel_format)9;
    CHECK_STATUS(diffuse_generate(c, &g, &got), DIFFUSE_ERR_INVALID_ARGUMENT);
    into[0].format = DIFFUSE_PIXEL_BGRA8;
    {   /* variation into a caller RGB8 buffer */
        uint8_t *in = malloc((size_t)W * H * 3), *out = malloc((size_t)W * H * 3);
        fill_random(in, (size_t)W * H * 3, 3);
        diffuse_image src = {W, H, W * 3, DIFFUSE_PIXEL_RGB8, DIFFUSE_ORIGIN_TOP_LEFT, DIFFUSE_COLOR_SRGB, in};
        diffuse_image dst = src;
        dst.data = out;
        diffuse_variation_params v;
        diffuse_variation_params_init(&v);
        v.image = &src;
        v.steps = 3;
        v.seed = 5;
        diffuse_images *a = NULL, *b = NULL;
        CHECK_STATUS(diffuse_variation(c, &v, &a), DIFFUSE_OK);
        v.output_images = &dst;
        CHECK_STATUS(diffuse_variation(c, &v, &b), DIFFUSE_OK);
        CHECK(a && b && b->images[0].data == out && memcmp(a->images[0].data, out, (size_t)W * H * 3) == 0,
              "variation into a caller buffer");
        diffuse_images_free(a);
        diffuse_images_free(b);
        free(in);
        free(out);
    }
    diffuse_images_free(ref);
    for (uint32_t i = 0; i < n; i++) free(buf[i]);
    diffuse_ctx_free(c);
    diffuse_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* Cancel inside the VAE decode                                              */
/* ------------------------------------------------------------------------ */

static diffuse_job_status poll_job(const diffuse_job *job) {
    diffuse_job_status s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    diffuse_job_poll(job, &s);
    return s;
}

/* A 1-step 160x160 generate without guidance: the decode is most of it. */
static void decode_params(diffuse_generate_params *g) {
    diffuse_generate_params_init(g);
    g->prompt = "a white ring";
    g->steps = 1;
    g->guidance_scale = 1.0f;
    g->width = g->height = 160;
}

/* Runs decode_params as a job, polled every millisecond, and returns the
 * seconds from its entering DECODE to its end (-1 if it never did). */
static double time_decode(diffuse_ctx *c, diffuse_status *result) {
    diffuse_generate_params g;
    decode_params(&g);
    diffuse_job *job = NULL;
    *result = diffuse_job_start_generate(c, &g, &job);
    if (*result != DIFFUSE_OK) return -1.0;
    double t_decode = -1.0;
    diffuse_job_status s;
    for (;;) {
        s = poll_job(job);
        if (s.state == DIFFUSE_JOB_DONE || s.state == DIFFUSE_JOB_FAILED || s.state == DIFFUSE_JOB_CANCELLED) break;
        if (s.stage == DIFFUSE_STAGE_DECODE && t_decode < 0) t_decode = now();
        sleep_ms(1);
    }
    diffuse_job_wait(job, 0);
    const double t = now() - t_decode;
    *result = s.state == DIFFUSE_JOB_DONE ? DIFFUSE_OK : DIFFUSE_ERR_INTERNAL;
    diffuse_job_free(job);
    return t_decode < 0 ? -1.0 : t;
}

/* The job whose progress callback cancels it when the decode begins. */
typedef struct decode_canceller {
    diffuse_job *_Atomic job;
    double t_cancel;
} decode_canceller;

/* Progress callback (on the job's worker): at DECODE 0/1, the last report
 * before the VAE pass, cancels the job. pipe_progress has already checked
 * the cancel flag for this report, so only a check inside the decode can
 * stop it before the pass ends (at DECODE 1/1). */
static int cancel_at_decode(const diffuse_progress *p, void *user) {
    decode_canceller *dc = user;
    if (p->stage == DIFFUSE_STAGE_DECODE && p->step == 0) {
        diffuse_job *job = atomic_load(&dc->job);
        for (int i = 0; !job && i < 10000; i++) { /* the start has returned long before the decode */
            sleep_ms(1);
            job = atomic_load(&dc->job);
        }
        dc->t_cancel = now();
        if (job) diffuse_job_cancel(job);
    }
    return 0;
}

static void test_cancel_in_decode(void) {
    diffuse_model *m = load(fixture("tiny-sd1"));
    if (!m) return;
    diffuse_ctx *c = make_ctx(m);
    diffuse_status st;
    time_decode(c, &st); /* warm-up */
    const double full = time_decode(c, &st);
    CHECK(st == DIFFUSE_OK, "uncancelled run: %s", diffuse_status_string(st));
    diffuse_ctx_free(c);

    decode_canceller dc = {NULL, 0.0};
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = DIFFUSE_DEVICE_CPU;
    cp.progress_fn = cancel_at_decode;
    cp.progress_user = &dc;
    c = NULL;
    CHECK_STATUS(diffuse_ctx_create(m, &cp, &c), DIFFUSE_OK);
    diffuse_generate_params g;
    decode_params(&g);
    diffuse_job *job = NULL;
    CHECK_STATUS(diffuse_job_start_generate(c, &g, &job), DIFFUSE_OK);
    atomic_store(&dc.job, job);
    if (job) {
        CHECK_STATUS(diffuse_job_wait(job, 600000), DIFFUSE_OK);
        const double t = now() - dc.t_cancel;
        diffuse_job_status s = poll_job(job);
        /* Where the cancel was honoured is in the message: "VAE decode: ..."
         * inside the pass; "... stage 4, step 1/1" after it. */
        const char *msg = diffuse_job_last_error(job);
        CHECK(s.state == DIFFUSE_JOB_CANCELLED && strstr(msg, "VAE decode") && !strstr(msg, "step 1/1"),
              "cancelled at the decode's start: state %d, message '%s'", (int)s.state, msg);
        printf("cancel in decode: whole decode %.3f s; cancelled at its start, the job ended %.3f s later: %s\n",
               full, t, msg);
        diffuse_job_free(job);
    }
    diffuse_ctx_free(c);
    diffuse_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* Decoded previews                                                          */
/* ------------------------------------------------------------------------ */

typedef struct preview_log {
    int n;
    uint32_t step[16], w[16], h[16];
    double spread[16]; /* max - min of the red channel: not a flat image */
} preview_log;

static void on_preview(const diffuse_image *im, const diffuse_progress *p, void *user) {
    preview_log *l = user;
    if (l->n >= 16) return;
    int lo = 255, hi = 0;
    for (uint32_t y = 0; y < im->height; y++)
        for (uint32_t x = 0; x < im->width; x++) {
            const int v = im->data[(size_t)y * im->stride + (size_t)x * 3];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    l->step[l->n] = p->step;
    l->w[l->n] = im->width;
    l->h[l->n] = im->height;
    l->spread[l->n] = hi - lo;
    l->n++;
}

static void test_preview_decode(void) {
    diffuse_model *m = load(fixture("tiny-sd1"));
    if (!m) return;
    diffuse_ctx *c = make_ctx(m);
    preview_log l = {0};
    CHECK_STATUS(diffuse_ctx_set_preview(c, on_preview, &l, 1), DIFFUSE_OK);
    CHECK_STATUS(diffuse_ctx_set_preview_decode(c, 2), DIFFUSE_OK);
    CHECK_STATUS(diffuse_ctx_set_preview_decode(NULL, 2), DIFFUSE_ERR_INVALID_ARGUMENT);
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    g.prompt = "a cyan heart";
    g.steps = 5;
    g.width = 64;
    g.height = 48;
    g.sampler = DIFFUSE_SAMPLER_EULER;
    diffuse_images *im = NULL;
    CHECK_STATUS(diffuse_generate(c, &g, &im), DIFFUSE_OK);
    CHECK(l.n == 5, "%d previews for 5 steps", l.n);
    for (int i = 0; i < l.n; i++) {
        const int decoded = l.step[i] % 2 == 0 || l.step[i] == 5;
        const uint32_t w = decoded ? 64 : 32, h = decoded ? 48 : 24; /* tiny-sd1: VAE scale 2 */
        CHECK(l.w[i] == w && l.h[i] == h && l.spread[i] > 0, "preview at step %u: %ux%u (want %ux%u), spread %.0f",
              l.step[i], l.w[i], l.h[i], w, h, l.spread[i]);
    }
    diffuse_images_free(im);
    /* off again: only projections */
    CHECK_STATUS(diffuse_ctx_set_preview_decode(c, 0), DIFFUSE_OK);
    l.n = 0;
    CHECK_STATUS(diffuse_generate(c, &g, &im), DIFFUSE_OK);
    CHECK(l.n == 5 && l.w[4] == 32, "without decode: %d previews, last %ux%u", l.n, l.w[4], l.h[4]);
    diffuse_images_free(im);
    diffuse_ctx_free(c);
    diffuse_model_free(m);
}

/* ------------------------------------------------------------------------ */
/* Load progress and cancel                                                  */
/* ------------------------------------------------------------------------ */

typedef struct load_log {
    int calls, bad, cancel_at;
    uint32_t last_step, total;
} load_log;

static int on_load(const diffuse_progress *p, void *user) {
    load_log *l = user;
    l->calls++;
    if (p->stage != DIFFUSE_STAGE_LOAD || p->total == 0 || p->step > p->total ||
        (l->calls > 1 && p->step < l->last_step))
        l->bad++;
    l->last_step = p->step;
    l->total = p->total;
    return l->cancel_at && l->calls >= l->cancel_at;
}

static void test_load_progress(void) {
    const char *paths[] = {fixture("tiny-sd1"), fixture("tiny-sd1-single.safetensors")};
    for (int i = 0; i < 2; i++) {
        load_log l = {0};
        diffuse_model_params mp;
        diffuse_model_params_init(&mp);
        mp.progress_fn = on_load;
        mp.progress_user = &l;
        diffuse_model *m = NULL;
        CHECK_STATUS(diffuse_model_load(paths[i], &mp, &m), DIFFUSE_OK);
        CHECK(l.calls >= 2 && !l.bad && l.last_step == l.total, "%s: %d calls, %d bad, last %u/%u", paths[i],
              l.calls, l.bad, l.last_step, l.total);
        diffuse_model_free(m);
        for (int at = 1; at <= l.calls; at++) {
            load_log k = {0};
            k.cancel_at = at;
            char msg[256] = "";
            mp.progress_user = &k;
            mp.error_buf = msg;
            mp.error_buf_size = sizeof msg;
            m = (diffuse_model *)1;
            CHECK_STATUS(diffuse_model_load(paths[i], &mp, &m), DIFFUSE_CANCELLED);
            CHECK(m == NULL && strstr(msg, "cancel"), "cancel at %d: model %p, message '%s'", at, (void *)m, msg);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */
/* ------------------------------------------------------------------------ */

static void test_devices(void) {
    size_t count = 0;
    CHECK_STATUS(diffuse_list_devices(NULL, 0, &count), DIFFUSE_OK);
    CHECK(count == 2, "count %zu", count);
    diffuse_device_info d[3];
    memset(d, 0, sizeof d);
    for (int i = 0; i < 3; i++) d[i].struct_size = sizeof d[i];
    CHECK_STATUS(diffuse_list_devices(d, 3, &count), DIFFUSE_OK);
    CHECK(d[0].device == DIFFUSE_DEVICE_CPU && d[0].available && d[0].name[0] && d[0].memory_bytes > (64u << 20) &&
              d[0].threads >= 1,
          "cpu entry: %s, %llu bytes, %u threads", d[0].name, (unsigned long long)d[0].memory_bytes, d[0].threads);
    CHECK(d[1].device == DIFFUSE_DEVICE_CUDA && !d[1].available && d[1].note[0], "cuda entry: available %d, %s",
          d[1].available, d[1].note);
    printf("devices: [%s] %s | [CUDA] available %d: %s\n", d[0].name, d[0].note, d[1].available, d[1].note);
    CHECK_STATUS(diffuse_list_devices(NULL, 1, &count), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(diffuse_list_devices(d, 1, NULL), DIFFUSE_ERR_INVALID_ARGUMENT);
    d[0].struct_size = 4;
    CHECK_STATUS(diffuse_list_devices(d, 1, &count), DIFFUSE_ERR_INVALID_ARGUMENT);

    /* A module path that does not exist: the note says so, AUTO falls back
     * to the CPU, CUDA is NO_DEVICE with the note in its message. */
    setenv("DIFFUSE_CUDA_MODULE", "/nonexistent/libdiffuse_cuda.so", 1);
    d[0].struct_size = sizeof d[0];
    d[1].struct_size = sizeof d[1];
    CHECK_STATUS(diffuse_list_devices(d, 2, &count), DIFFUSE_OK);
    CHECK(strstr(d[1].note, "/nonexistent/libdiffuse_cuda.so") != NULL, "note: %s", d[1].note);
    diffuse_model *m = load(fixture("tiny-sd1"));
    if (m) {
        diffuse_ctx *c = NULL;
        diffuse_ctx_params cp;
        diffuse_ctx_params_init(&cp);
        cp.device = DIFFUSE_DEVICE_AUTO;
        cp.n_threads = 1;
        CHECK_STATUS(diffuse_ctx_create(m, &cp, &c), DIFFUSE_OK);
        diffuse_device req = DIFFUSE_DEVICE_CUDA;
        diffuse_device_info got;
        memset(&got, 0, sizeof got);
        got.struct_size = sizeof got;
        CHECK_STATUS(diffuse_ctx_get_device(c, &req, &got), DIFFUSE_OK);
        CHECK(req == DIFFUSE_DEVICE_AUTO && got.device == DIFFUSE_DEVICE_CPU && got.threads == 1,
              "ctx device: requested %d, got %d with %u threads", (int)req, (int)got.device, got.threads);
        got.struct_size = 2;
        CHECK_STATUS(diffuse_ctx_get_device(c, NULL, &got), DIFFUSE_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(diffuse_ctx_get_device(NULL, &req, NULL), DIFFUSE_ERR_INVALID_ARGUMENT);
        diffuse_ctx_free(c);
        c = NULL;
        cp.device = DIFFUSE_DEVICE_CUDA;
        diffuse_status st = diffuse_ctx_create(m, &cp, &c);
        CHECK(st == DIFFUSE_ERR_NO_DEVICE && c == NULL, "CUDA ctx: %s", diffuse_status_string(st));
        diffuse_model_free(m);
    }
    unsetenv("DIFFUSE_CUDA_MODULE");
}

/* ------------------------------------------------------------------------ */
/* load -> generate -> free loop: resident memory returns to its baseline    */
/* ------------------------------------------------------------------------ */

static void test_rss_loop(void) {
    if (UNDER_ASAN) {
        printf("SKIP load/generate/free RSS loop: not meaningful under AddressSanitizer (its leak check covers the "
               "same loop there)\n");
    }
    long long rss[8];
    const int iters = UNDER_ASAN ? 2 : 8;
    for (int i = 0; i < iters; i++) {
        diffuse_model *m = load(fixture("tiny-sd1"));
        if (!m) return;
        diffuse_ctx *c = make_ctx(m);
        diffuse_generate_params g;
        diffuse_generate_params_init(&g);
        g.prompt = "a purple cross in the center";
        g.steps = 1;
        g.width = g.height = 64;
        diffuse_images *im = NULL;
        CHECK_STATUS(diffuse_generate(c, &g, &im), DIFFUSE_OK);
        diffuse_images_free(im);
        diffuse_ctx_free(c);
        diffuse_model_free(m);
        rss[i] = status_bytes("VmRSS");
    }
    if (UNDER_ASAN) return;
    printf("RSS after each load/generate/free (MiB):");
    for (int i = 0; i < iters; i++) printf(" %.1f", rss[i] / 1048576.0);
    printf("\n");
    /* After the first round (thread pools, allocator arenas), no growth. */
    const long long grow = rss[iters - 1] - rss[1];
    CHECK(grow < (2ll << 20), "RSS grew by %.2f MiB over %d rounds", grow / 1048576.0, iters - 2);
}

/* Mean |difference| between columns @a and @b (rows when @rows) of an RGB8
 * image, over all pixels and channels. */
static double line_diff(const diffuse_image *im, int rows, uint32_t a, uint32_t b) {
    const uint32_t n = rows ? im->width : im->height;
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            const uint8_t *pa = rows ? im->data + (size_t)a * im->stride + (size_t)i * 3
                                     : im->data + (size_t)i * im->stride + (size_t)a * 3;
            const uint8_t *pb = rows ? im->data + (size_t)b * im->stride + (size_t)i * 3
                                     : im->data + (size_t)i * im->stride + (size_t)b * 3;
            sum += abs((int)pa[k] - (int)pb[k]);
        }
    return sum / (3.0 * n);
}

/* Seamless output: across the wrap-around seam (last column next to the
 * first, likewise rows) the image changes no more than between interior
 * neighbours (their mean, with 10 % slack), while the same seed without
 * tiling has a visible seam (larger than the tiled one). */
static void check_seams(const char *name, diffuse_ctx *ctx, const diffuse_generate_params *g,
                        const diffuse_images *out) {
    diffuse_generate_params plain = *g;
    plain.tile_x = plain.tile_y = 0;
    diffuse_images *ref = NULL;
    diffuse_status st = diffuse_generate(ctx, &plain, &ref);
    for (int rows = 0; rows < 2; rows++) {
        if (!(rows ? g->tile_y : g->tile_x)) continue;
        const diffuse_image *im = &out->images[0];
        const uint32_t n = rows ? im->height : im->width;
        double interior = 0.0;
        for (uint32_t i = 0; i + 1 < n; i++) interior += line_diff(im, rows, i, i + 1);
        interior /= (double)(n - 1);
        const double seam = line_diff(im, rows, n - 1, 0);
        const double plain_seam = st == DIFFUSE_OK ? line_diff(&ref->images[0], rows, n - 1, 0) : -1.0;
        const int ok = seam <= 1.1 * interior && plain_seam > seam;
        printf("%s %s %s seam: %.2f vs interior neighbours %.2f (untiled image's seam %.2f)\n", ok ? "PASS" : "FAIL",
               name, rows ? "top-bottom" : "left-right", seam, interior, plain_seam);
        if (!ok) failures++;
    }
    diffuse_images_free(ref);
}

/* Seamless tiling on the trained demo model (models/demo): its pictures are
 * smooth, so a seam shows. (The tiny random fixtures draw pixel noise, where
 * neighbours differ as much as any two pixels; test_pipeline checks their
 * tiled output against diffusers with circular convolutions instead.) */
static void test_seamless(void) {
    const char *demo = getenv("DIFFUSE_DEMO_MODEL");
    char path[4096];
    snprintf(path, sizeof path, "%s/model_index.json", demo ? demo : "models/demo");
    if (!demo || access(path, R_OK) != 0) {
        printf("SKIP seamless seam check: the demo model (%s) is not in this tree\n", demo ? demo : "unset");
        return;
    }
    diffuse_model *m = load(demo);
    if (!m) return;
    diffuse_ctx *c = make_ctx(m);
    static const struct { const char *prompt; uint32_t tx, ty; } cases[] = {
        {"a large red circle on the left on a blue background", 1, 1},
        {"a small yellow star at the top right and a green square at the bottom on a black background", 1, 0},
        {"a large purple ring in the center on a white background with a orange bottom half", 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        diffuse_generate_params g;
        diffuse_generate_params_init(&g);
        g.prompt = cases[i].prompt;
        g.seed = 1000 + i;
        g.tile_x = cases[i].tx;
        g.tile_y = cases[i].ty;
        diffuse_images *im = NULL;
        diffuse_status st = diffuse_generate(c, &g, &im);
        CHECK(st == DIFFUSE_OK, "seamless generate: %s", diffuse_ctx_last_error(c));
        if (st == DIFFUSE_OK) check_seams(cases[i].prompt, c, &g, im);
        diffuse_images_free(im);
    }
    diffuse_ctx_free(c);
    diffuse_model_free(m);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_estimate_vs_peak(); /* first: it forks before any thread pool exists */
    test_estimate_api();
    test_output_buffers();
    test_load_progress();
    test_devices();
    test_cancel_in_decode();
    test_preview_decode();
    test_rss_loop();
    test_seamless();
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all embedding checks passed\n");
    return 0;
}
