/*
 * test_pipeline.c - whole pipelines through the public API against
 * diffusers' pipelines on the tiny test model (fixtures from
 * scripts/make_pipeline_fixtures.py): the 8-bit images must agree within
 * 1/255 on at least 99.9% of values. Also cancellation and progress.
 */
#include <diffuse.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static const char *fixtures(void) {
    const char *d = getenv("DIFFUSE_FIXTURES");
    return d ? d : "tests/fixtures";
}

typedef struct pipe_fixture {
    struct json_object *meta;
    uint8_t *images; /* (n, H, W, 3) */
    size_t bytes;
} pipe_fixture;

static int fixture_load(const char *name, pipe_fixture *fx) {
    char path[4096], line[8192];
    snprintf(path, sizeof path, "%s/pipeline/%s.bin", fixtures(), name);
    FILE *f = fopen(path, "rb");
    if (!f) return printf("FAIL cannot open %s\n", path), 1;
    int bad = !fgets(line, sizeof line, f) || strcmp(line, "DIFFUSE-FIXTURE pipeline 1\n") != 0;
    bad = bad || !fgets(line, sizeof line, f) || !(fx->meta = json_tokener_parse(line));
    if (!bad) {
        int n = json_object_get_int(json_object_object_get(fx->meta, "n"));
        int w = json_object_get_int(json_object_object_get(fx->meta, "width"));
        int h = json_object_get_int(json_object_object_get(fx->meta, "height"));
        fx->bytes = (size_t)n * w * h * 3;
        fx->images = malloc(fx->bytes);
        bad = fread(fx->images, 1, fx->bytes, f) != fx->bytes;
    }
    fclose(f);
    if (bad) printf("FAIL malformed fixture %s\n", path);
    return bad;
}

static const char *jstr(struct json_object *o, const char *k) {
    return json_object_get_string(json_object_object_get(o, k));
}
static double jnum(struct json_object *o, const char *k) {
    return json_object_get_double(json_object_object_get(o, k));
}

static diffuse_sampler sampler_of(const char *name) {
    static const struct { const char *name; diffuse_sampler s; } map[] = {
        {"default", DIFFUSE_SAMPLER_DEFAULT}, {"ddim", DIFFUSE_SAMPLER_DDIM},
        {"euler", DIFFUSE_SAMPLER_EULER},     {"euler_a", DIFFUSE_SAMPLER_EULER_A},
        {"dpmpp_2m_karras", DIFFUSE_SAMPLER_DPMPP_2M_KARRAS},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].name, name) == 0) return map[i].s;
    return (diffuse_sampler)-1;
}

/* Compares RGB8 images with the reference: fraction within 1/255, max diff. */
static void compare(const char *name, const diffuse_images *out, const pipe_fixture *fx) {
    size_t total = 0, close = 0;
    int max_diff = 0;
    const uint8_t *ref = fx->images;
    for (uint32_t i = 0; i < out->count; i++) {
        const diffuse_image *im = &out->images[i];
        for (uint32_t y = 0; y < im->height; y++)
            for (uint32_t x = 0; x < im->width * 3; x++, ref++) {
                int d = abs((int)im->data[(size_t)y * im->stride + x] - (int)*ref);
                close += d <= 1;
                max_diff = d > max_diff ? d : max_diff;
                total++;
            }
    }
    const double frac = total ? (double)close / (double)total : 0.0;
    const int ok = total == fx->bytes && frac >= 0.999;
    printf("%s %s: %zu values, %.4f%% within 1/255, max diff %d\n", ok ? "PASS" : "FAIL", name, total, 100.0 * frac,
           max_diff);
    failures += !ok;
}

static void check_generate(diffuse_model *model, const char *name) {
    pipe_fixture fx = {0};
    if (fixture_load(name, &fx)) {
        failures++;
        return;
    }
    diffuse_ctx *ctx = NULL;
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = DIFFUSE_DEVICE_CPU;
    diffuse_status st = diffuse_ctx_create(model, &cp, &ctx);
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    g.prompt = jstr(fx.meta, "prompt");
    g.negative_prompt = jstr(fx.meta, "negative_prompt");
    g.n_images = (uint32_t)jnum(fx.meta, "n");
    g.width = (uint32_t)jnum(fx.meta, "width");
    g.height = (uint32_t)jnum(fx.meta, "height");
    g.steps = (uint32_t)jnum(fx.meta, "steps");
    g.guidance_scale = (float)jnum(fx.meta, "guidance");
    g.guidance_rescale = (float)jnum(fx.meta, "guidance_rescale");
    g.sampler = sampler_of(jstr(fx.meta, "sampler"));
    g.seed = (uint64_t)json_object_get_int64(json_object_object_get(fx.meta, "seed"));
    diffuse_images *out = NULL;
    if (st == DIFFUSE_OK) st = diffuse_generate(ctx, &g, &out);
    if (st != DIFFUSE_OK) {
        printf("FAIL %s: %s: %s\n", name, diffuse_status_string(st), diffuse_ctx_last_error(ctx));
        failures++;
    } else {
        compare(name, out, &fx);
    }
    diffuse_images_free(out);
    diffuse_ctx_free(ctx);
    json_object_put(fx.meta);
    free(fx.images);
}

/* Progress arrives for every stage; cancelling mid-denoise returns
 * DIFFUSE_CANCELLED, no images, and the context works afterwards. */
typedef struct progress_log {
    int calls, denoise_steps, cancel_at;
    diffuse_stage last_stage;
} progress_log;

static int on_progress(const diffuse_progress *p, void *user) {
    progress_log *l = user;
    l->calls++;
    l->last_stage = p->stage;
    if (p->stage == DIFFUSE_STAGE_DENOISE) l->denoise_steps++;
    return l->cancel_at && l->denoise_steps >= l->cancel_at;
}

static void check_cancel(diffuse_model *model) {
    progress_log log = {0};
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.progress_fn = on_progress;
    cp.progress_user = &log;
    diffuse_ctx *ctx = NULL;
    diffuse_status st = diffuse_ctx_create(model, &cp, &ctx);
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    g.prompt = "a circle";
    g.steps = 6;
    g.n_images = 2;
    diffuse_images *out = NULL;
    log.cancel_at = 2;
    if (st == DIFFUSE_OK) st = diffuse_generate(ctx, &g, &out);
    int ok = st == DIFFUSE_CANCELLED && !out && log.denoise_steps == 2 && strstr(diffuse_ctx_last_error(ctx), "cancel");
    printf("%s cancel after 2 denoising steps: %s (%d progress calls)\n", ok ? "PASS" : "FAIL",
           diffuse_ctx_last_error(ctx), log.calls);
    failures += !ok;
    log = (progress_log){0};
    g.n_images = 1;
    st = diffuse_generate(ctx, &g, &out);
    ok = st == DIFFUSE_OK && out && out->count == 1 && log.last_stage == DIFFUSE_STAGE_DECODE &&
         log.denoise_steps >= 6;
    printf("%s context usable after cancel: %s, %d denoise reports\n", ok ? "PASS" : "FAIL",
           diffuse_status_string(st), log.denoise_steps);
    failures += !ok;
    diffuse_images_free(out);
    diffuse_ctx_free(ctx);
}

int main(void) {
    char path[4096], err[1024] = "";
    snprintf(path, sizeof path, "%s/models/tiny-sd1", fixtures());
    diffuse_model_params mp;
    diffuse_model_params_init(&mp);
    mp.error_buf = err;
    mp.error_buf_size = sizeof err;
    diffuse_model *model = NULL;
    diffuse_status st = diffuse_model_load(path, &mp, &model);
    if (st != DIFFUSE_OK) {
        printf("FAIL loading %s: %s\n", path, err);
        return 1;
    }
    static const char *gen_cases[] = {"gen_default", "gen_euler_a_n2", "gen_ddim_nocfg", "gen_dpmpp_rescale",
                                      "gen_euler"};
    for (size_t i = 0; i < sizeof gen_cases / sizeof gen_cases[0]; i++) check_generate(model, gen_cases[i]);
    check_cancel(model);
    diffuse_model_free(model);
    printf("%s\n", failures ? "pipeline: FAILED" : "pipeline: all checks passed");
    return failures ? 1 : 0;
}
