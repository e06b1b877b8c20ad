/*
 * test_budget.c - the context's memory budget: a run that cannot fit fails
 * with DIFFUSE_ERR_OUT_OF_MEMORY before it starts; a budget too small for a
 * whole VAE decode switches generation to the tiled decode, which then
 * stays within it.
 */
#include "backend.h"
#include "model/model.h"
#include "nets/vae.h"
#include "pipe/pipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failures++;                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        } else {                                           \
            printf("PASS ");                               \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

int main(void) {
    char path[4096];
    const char *fx = getenv("DIFFUSE_FIXTURES");
    snprintf(path, sizeof path, "%s/models/tiny-sd1", fx ? fx : "tests/fixtures");
    df_error err = {0};
    diffuse_model *m = NULL;
    bk_backend *bk = NULL;
    if (df_model_load(path, NULL, &m, &err) != DIFFUSE_OK || bk_cpu_create(0, &bk, &err) != DIFFUSE_OK) {
        printf("FAIL setup: %s\n", err.msg);
        return 1;
    }
    df_run r = {.model = m, .bk = bk, .err = &err, .image_count = 1};
    diffuse_generate_params p;
    diffuse_generate_params_init(&p);
    p.prompt = "a budget";
    p.steps = 2;
    p.guidance_scale = 1.0f; /* no CFG: UNet batch 1, so the VAE decode dominates */
    p.width = p.height = 128; /* 64x64 latents: tiles of the tiny VAE's 16 */

    /* Whole decode with no budget; what a budget below it changes. */
    int tile = -1;
    size_t whole = 0, tiled = 0;
    pipe_plan_decode(&r, 0, 128, 128, &tile, &whole);
    CHECK(tile == 0 && whole > 0, "no budget: whole decode (%zu MiB)", whole >> 20);
    /* What the whole run reserves without a budget (the decode dominates). */
    diffuse_images *out = NULL;
    diffuse_status st = pipe_generate(&r, &p, &out);
    const size_t need = bk->arena_size;
    CHECK(st == DIFFUSE_OK && need >= whole, "no budget: the run reserves %zu MiB", need >> 20);
    diffuse_images_free(out);
    out = NULL;
    bk->ops->destroy(bk);
    bk = NULL;
    if (bk_cpu_create(0, &bk, &err) != DIFFUSE_OK) return 1;
    r.bk = bk;

    r.memory_budget = need - (1 << 20);
    pipe_plan_decode(&r, 0, 128, 128, &tile, &tiled);
    CHECK(tile == 16 && tiled < whole, "budget %zu MiB: tiles of %d latents (%zu MiB)",
          (size_t)(r.memory_budget >> 20), tile, tiled >> 20);

    /* A generation under that budget runs tiled and keeps to it. */
    st = pipe_generate(&r, &p, &out);
    CHECK(st == DIFFUSE_OK && out && out->count == 1 && bk->arena_size <= r.memory_budget &&
              bk->arena_peak <= r.memory_budget,
          "generate 128x128 within %zu MiB: %s (arena %zu MiB, peak %zu MiB) %s", (size_t)(r.memory_budget >> 20),
          diffuse_status_string(st), bk->arena_size >> 20, bk->arena_peak >> 20, st ? err.msg : "");
    diffuse_images_free(out);
    out = NULL;

    /* A budget nothing fits in: refused before any work. */
    r.memory_budget = 1 << 20;
    st = pipe_generate(&r, &p, &out);
    CHECK(st == DIFFUSE_ERR_OUT_OF_MEMORY && !out && strstr(err.msg, "memory_budget"), "1 MiB budget refused: %s",
          err.msg);

    bk->ops->destroy(bk);
    df_model_free(m);
    return failures ? 1 : 0;
}
