/*
 * test_cuda_memory.c - device memory of a CUDA context: what
 * diffuse_ctx_get_memory reports against what the device allocator saw,
 * diffuse_estimate_memory for device CUDA against the measured peak, the
 * memory_budget kept (or refused before the run starts), a device that runs
 * out of memory mid-run, and a load -> generate -> free loop that returns the
 * device to its baseline.
 *
 * The CUDA module is the one DIFFUSE_CUDA_MODULE names. On the emulated
 * module (the test suite) the device allocator's own counters
 * (emu_memory: live and peak cudaMalloc bytes, kernels/emu) are the
 * independent measurement, and emu_set_device_memory makes a small device.
 * On a real GPU those checks are reported as skipped and the rest runs.
 * Images are 16x16 with 2 steps (tiny-sd1; see test_cuda_pipeline.c for why).
 */
#include "api_check.h"

#include <diffuse.h>

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIDE 16

/* The emulated module's allocator counters, when that is the module. */
typedef void (*emu_memory_fn)(uint64_t *live, uint64_t *peak, uint64_t *count);
typedef void (*emu_u64_fn)(uint64_t);
typedef void (*emu_void_fn)(void);
static emu_memory_fn emu_memory;
static emu_void_fn emu_reset_peak;
static emu_u64_fn emu_set_device_memory;

static void find_emulator(void) {
    const char *path = getenv("DIFFUSE_CUDA_MODULE");
    void *h = path ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL; /* loaded by libdiffuse already */
    if (!h) return;
    emu_memory = (emu_memory_fn)dlsym(h, "emu_memory");
    emu_reset_peak = (emu_void_fn)dlsym(h, "emu_memory_reset_peak");
    emu_set_device_memory = (emu_u64_fn)dlsym(h, "emu_set_device_memory");
    if (!emu_memory || !emu_reset_peak || !emu_set_device_memory) emu_memory = NULL;
}

static uint64_t emu_live(void) {
    uint64_t live = 0;
    emu_memory(&live, NULL, NULL);
    return live;
}

static diffuse_status ctx_on(const diffuse_model *m, diffuse_device dev, uint64_t budget, diffuse_ctx **ctx) {
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = dev;
    cp.n_threads = 1;
    cp.memory_budget = budget;
    return diffuse_ctx_create(m, &cp, ctx);
}

static int denoise_steps; /* DENOISE reports seen by the last run */
static diffuse_ctx *busy_probe_ctx;
static diffuse_status busy_probe_status = DIFFUSE_OK;

static int on_progress(const diffuse_progress *p, void *user) {
    (void)user;
    if (p->stage == DIFFUSE_STAGE_DENOISE && p->step > 0) denoise_steps++;
    if (busy_probe_ctx && busy_probe_status == DIFFUSE_OK) {
        diffuse_ctx_memory mem = {.struct_size = sizeof mem};
        busy_probe_status = diffuse_ctx_get_memory(busy_probe_ctx, &mem);
    }
    return 0;
}

static diffuse_status generate(diffuse_ctx *ctx, diffuse_images **out) {
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    g.prompt = "a red circle";
    g.width = g.height = SIDE;
    g.steps = 2;
    g.guidance_scale = 7.5f;
    g.seed = 99;
    denoise_steps = 0;
    *out = NULL;
    return diffuse_generate(ctx, &g, out);
}

static diffuse_ctx_memory ctx_memory(diffuse_ctx *ctx) {
    diffuse_ctx_memory mem;
    memset(&mem, 0xA5, sizeof mem); /* poisoned: every field must be written */
    mem.struct_size = sizeof mem;
    const diffuse_status st = diffuse_ctx_get_memory(ctx, &mem);
    if (st != DIFFUSE_OK) {
        printf("FAIL diffuse_ctx_get_memory: %s\n", diffuse_status_string(st));
        exit(1);
    }
    return mem;
}

static diffuse_memory_estimate estimate(const diffuse_model *m, uint64_t budget, diffuse_device dev) {
    diffuse_memory_query q;
    diffuse_memory_query_init(&q);
    q.width = q.height = SIDE;
    q.guidance_scale = 7.5f;
    q.device = dev;
    q.memory_budget = budget;
    diffuse_memory_estimate e = {.struct_size = sizeof e};
    const diffuse_status st = diffuse_estimate_memory(m, &q, &e);
    if (st != DIFFUSE_OK) {
        printf("FAIL diffuse_estimate_memory (device %d): %s\n", (int)dev, diffuse_status_string(st));
        exit(1);
    }
    return e;
}

static int same_pixels(const diffuse_images *a, const diffuse_images *b) {
    if (!a || !b || a->count != 1 || b->count != 1) return 0;
    const diffuse_image *x = &a->images[0], *y = &b->images[0];
    if (x->width != y->width || x->height != y->height) return 0;
    for (uint32_t r = 0; r < x->height; r++)
        if (memcmp(x->data + (size_t)r * x->stride, y->data + (size_t)r * y->stride, (size_t)x->width * 3)) return 0;
    return 1;
}

int main(void) {
    char msg[512];
    size_t n_dev = 0;
    diffuse_list_devices(NULL, 0, &n_dev); /* loads the module */
    diffuse_model *m = load("tiny-sd1");

    /* CPU context: host arena reported, no device memory; BUSY inside a call
     * (the progress callback runs inside it). */
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = DIFFUSE_DEVICE_CPU;
    cp.n_threads = 1;
    cp.progress_fn = on_progress;
    diffuse_ctx *cpu = NULL;
    if (diffuse_ctx_create(m, &cp, &cpu) != DIFFUSE_OK) {
        printf("FAIL CPU context\n");
        return 1;
    }
    busy_probe_ctx = cpu;
    diffuse_images *ref = NULL;
    diffuse_status st = generate(cpu, &ref);
    busy_probe_ctx = NULL;
    check(st == DIFFUSE_OK, "CPU generate", diffuse_status_string(st));
    check(busy_probe_status == DIFFUSE_ERR_BUSY, "diffuse_ctx_get_memory inside a call is BUSY",
          diffuse_status_string(busy_probe_status));
    diffuse_ctx_memory cm = ctx_memory(cpu);
    snprintf(msg, sizeof msg, "device %d, host %llu bytes, device %llu, peak %llu", (int)cm.device,
             (unsigned long long)cm.host_bytes, (unsigned long long)cm.device_bytes,
             (unsigned long long)cm.device_peak_bytes);
    check(cm.device == DIFFUSE_DEVICE_CPU && cm.host_bytes > 0 && cm.device_bytes == 0 && cm.device_peak_bytes == 0 &&
              cm.memory_budget == 0,
          "CPU context memory", msg);
    diffuse_ctx_memory small = {.struct_size = 8};
    check(diffuse_ctx_get_memory(cpu, &small) == DIFFUSE_ERR_INVALID_ARGUMENT &&
              diffuse_ctx_get_memory(NULL, &cm) == DIFFUSE_ERR_INVALID_ARGUMENT &&
              diffuse_ctx_get_memory(cpu, NULL) == DIFFUSE_ERR_INVALID_ARGUMENT,
          "diffuse_ctx_get_memory refuses bad arguments", NULL);
    diffuse_ctx_free(cpu);

    find_emulator();
    const uint64_t base = emu_memory ? emu_live() : 0; /* before any CUDA context */
    if (emu_memory) emu_reset_peak();
    diffuse_ctx *ctx = NULL;
    st = ctx_on(m, DIFFUSE_DEVICE_CUDA, 0, &ctx);
    if (st != DIFFUSE_OK) {
        printf("SKIP no CUDA device (%s): nothing else to test\n", diffuse_status_string(st));
        diffuse_images_free(ref);
        diffuse_model_free(m);
        return failures ? 1 : 77;
    }
    if (!emu_memory) printf("SKIP independent allocator counters: the CUDA module is not the emulated one\n");

    /* 1. Unbudgeted run: the context's counters against the allocator's. */
    const diffuse_memory_estimate e0 = estimate(m, 0, DIFFUSE_DEVICE_CUDA);
    /* the same plan's arena, which the CPU estimate reports on its own */
    const uint64_t arena = estimate(m, 0, DIFFUSE_DEVICE_CPU).context_host_bytes;
    diffuse_images *out = NULL;
    st = generate(ctx, &out);
    check(st == DIFFUSE_OK, "CUDA generate", st == DIFFUSE_OK ? "" : diffuse_ctx_last_error(ctx));
    const diffuse_ctx_memory m0 = ctx_memory(ctx);
    snprintf(msg, sizeof msg, "holds %llu bytes, peak %llu", (unsigned long long)m0.device_bytes,
             (unsigned long long)m0.device_peak_bytes);
    check(m0.device == DIFFUSE_DEVICE_CUDA && m0.host_bytes == 0 && m0.device_bytes > 0 &&
              m0.device_peak_bytes >= m0.device_bytes,
          "CUDA context memory", msg);
    if (emu_memory) {
        uint64_t live, peak;
        emu_memory(&live, &peak, NULL);
        snprintf(msg, sizeof msg, "context: holds %llu, peak %llu; allocator: %llu live, peak %llu (above %llu before)",
                 (unsigned long long)m0.device_bytes, (unsigned long long)m0.device_peak_bytes,
                 (unsigned long long)(live - base), (unsigned long long)(peak - base), (unsigned long long)base);
        check(live - base == m0.device_bytes && peak - base == m0.device_peak_bytes,
              "context counters equal the device allocator's", msg);
    }
    snprintf(msg, sizeof msg, "estimate %llu bytes (fits %d), measured peak %llu: %.2fx",
             (unsigned long long)e0.device_bytes, e0.fits, (unsigned long long)m0.device_peak_bytes,
             m0.device_peak_bytes ? (double)e0.device_bytes / (double)m0.device_peak_bytes : 0.0);
    check(e0.fits && e0.context_host_bytes == 0 && e0.device_bytes >= m0.device_peak_bytes &&
              e0.device_bytes <= m0.device_peak_bytes + m0.device_peak_bytes / 2,
          "device estimate bounds the measured peak (at most 1.5x)", msg);
    diffuse_ctx_free(ctx);
    if (emu_memory) {
        snprintf(msg, sizeof msg, "%llu bytes live, %llu before", (unsigned long long)emu_live(),
                 (unsigned long long)base);
        check(emu_live() == base, "freeing the context frees its device memory", msg);
    }

    /* 2. A budget of exactly the estimate: the run fits, stays within it, and
     *    draws the same image. */
    const uint64_t budget = e0.device_bytes;
    st = ctx_on(m, DIFFUSE_DEVICE_CUDA, budget, &ctx);
    check(st == DIFFUSE_OK, "CUDA context with a budget", diffuse_status_string(st));
    if (emu_memory) emu_reset_peak();
    diffuse_images *out_b = NULL;
    st = generate(ctx, &out_b);
    const diffuse_ctx_memory m1 = ctx_memory(ctx);
    snprintf(msg, sizeof msg, "%s; peak %llu of a %llu budget", st == DIFFUSE_OK ? "ok" : diffuse_ctx_last_error(ctx),
             (unsigned long long)m1.device_peak_bytes, (unsigned long long)budget);
    check(st == DIFFUSE_OK && m1.memory_budget == budget && m1.device_peak_bytes <= budget,
          "budget = estimate: runs within it", msg);
    if (emu_memory) {
        uint64_t peak;
        emu_memory(NULL, &peak, NULL);
        snprintf(msg, sizeof msg, "allocator peak %llu above baseline, budget %llu", (unsigned long long)(peak - base),
                 (unsigned long long)budget);
        check(peak - base <= budget, "budget = estimate: the allocator agrees", msg);
    }
    check(same_pixels(out, out_b), "budgeted run draws the same image", NULL);
    diffuse_images_free(out_b);
    diffuse_ctx_free(ctx);

    /* 3. Budgets that cannot fit: room for the weights and half the arena,
     *    and 1 MiB (not even the weights): refused before the run starts (no
     *    denoising step, no device allocation), as the estimate says. */
    const uint64_t too_small[2] = {e0.device_bytes - arena / 2, (uint64_t)1 << 20};
    for (int i = 0; i < 2; i++) {
        const diffuse_memory_estimate e = estimate(m, too_small[i], DIFFUSE_DEVICE_CUDA);
        cp.device = DIFFUSE_DEVICE_CUDA;
        cp.memory_budget = too_small[i];
        cp.progress_fn = on_progress;
        st = diffuse_ctx_create(m, &cp, &ctx);
        if (st != DIFFUSE_OK) {
            check(0, "CUDA context with a small budget", diffuse_status_string(st));
            continue;
        }
        const uint64_t before = emu_memory ? emu_live() : 0;
        diffuse_images *o = NULL;
        st = generate(ctx, &o);
        const diffuse_ctx_memory mm = ctx_memory(ctx);
        snprintf(msg, sizeof msg, "budget %llu: estimate fits=%d tiled=%d; run: %s (%s); %d steps; device peak %llu",
                 (unsigned long long)too_small[i], e.fits, e.vae_tiled, diffuse_status_string(st),
                 diffuse_ctx_last_error(ctx), denoise_steps, (unsigned long long)mm.device_peak_bytes);
        if (e.fits)
            check(st == DIFFUSE_OK && mm.device_peak_bytes <= too_small[i], "small budget the estimate fits", msg);
        else
            check(st == DIFFUSE_ERR_OUT_OF_MEMORY && denoise_steps == 0 && mm.device_bytes == 0 && !o &&
                      (!emu_memory || emu_live() == before),
                  "budget below the need: OUT_OF_MEMORY before starting", msg);
        diffuse_images_free(o);
        diffuse_ctx_free(ctx);
    }
    cp.progress_fn = NULL;

    /* 4. A device too small for the run, no budget: the run fails with
     *    OUT_OF_MEMORY mid-way, leaks nothing, and the context still works
     *    once the device has room again. */
    if (emu_memory) {
        st = ctx_on(m, DIFFUSE_DEVICE_CUDA, 0, &ctx);
        emu_set_device_memory(base + m0.device_peak_bytes - 1);
        diffuse_images *o = NULL;
        st = generate(ctx, &o);
        snprintf(msg, sizeof msg, "%s: %s", diffuse_status_string(st), diffuse_ctx_last_error(ctx));
        check(st == DIFFUSE_ERR_OUT_OF_MEMORY && !o, "a device too small: OUT_OF_MEMORY", msg);
        emu_set_device_memory(0);
        st = generate(ctx, &o);
        check(st == DIFFUSE_OK && same_pixels(out, o), "the context works again with room", diffuse_status_string(st));
        diffuse_images_free(o);
        diffuse_ctx_free(ctx);
        snprintf(msg, sizeof msg, "%llu bytes live, %llu before", (unsigned long long)emu_live(),
                 (unsigned long long)base);
        check(emu_live() == base, "nothing left on the device after the failed run", msg);
    } else {
        printf("SKIP a device too small: needs the emulated module's emu_set_device_memory\n");
    }
    diffuse_model_free(m);

    /* 5. load -> generate -> free, three times: the device returns to its
     *    baseline each time. */
    for (int round = 0; round < 3; round++) {
        diffuse_model *mr = load("tiny-sd1");
        diffuse_ctx *c = NULL;
        st = ctx_on(mr, DIFFUSE_DEVICE_CUDA, 0, &c);
        diffuse_images *o = NULL;
        if (st == DIFFUSE_OK) st = generate(c, &o);
        const uint64_t held = st == DIFFUSE_OK ? ctx_memory(c).device_bytes : 0;
        const int same = same_pixels(out, o);
        diffuse_images_free(o);
        diffuse_ctx_free(c);
        diffuse_model_free(mr);
        if (emu_memory) {
            uint64_t live, count;
            emu_memory(&live, NULL, &count);
            snprintf(msg, sizeof msg, "round %d: held %llu; after free %llu bytes in %llu allocations (baseline %llu)",
                     round + 1, (unsigned long long)held, (unsigned long long)live, (unsigned long long)count,
                     (unsigned long long)base);
            check(st == DIFFUSE_OK && same && live == base, "load -> generate -> free returns the device memory",
                  msg);
        } else {
            check(st == DIFFUSE_OK && same, "load -> generate -> free", diffuse_status_string(st));
        }
    }

    diffuse_images_free(out);
    diffuse_images_free(ref);
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
