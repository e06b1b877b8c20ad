/*
 * test_api.c - the public ABI as a host sees it: versions, status strings,
 * parameter defaults and struct_size handling, and every entry point on
 * NULL and out-of-range arguments. Links only the shared library.
 */
#include <diffuse.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures, checks;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        checks++;                                                \
        if (!(cond)) {                                           \
            failures++;                                          \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
            printf(__VA_ARGS__);                                 \
            printf("\n");                                        \
        }                                                        \
    } while (0)

#define CHECK_STATUS(expr, want)                                                                 \
    do {                                                                                         \
        diffuse_status got_ = (expr);                                                            \
        CHECK(got_ == (want), "%s = %s, want %s", #expr, diffuse_status_string(got_),           \
              diffuse_status_string(want));                                                      \
    } while (0)

static const char *model_dir(void) {
    static char path[4096];
    const char *fx = getenv("DIFFUSE_FIXTURES");
    snprintf(path, sizeof path, "%s/models/tiny-sd1", fx ? fx : "tests/fixtures");
    return path;
}

/* --- log capture ------------------------------------------------------- */
typedef struct log_capture {
    int count;
    diffuse_log_level last_level;
    char last[1024];
} log_capture;

static void capture_log(diffuse_log_level level, const char *msg, void *user) {
    log_capture *c = user;
    c->count++;
    c->last_level = level;
    snprintf(c->last, sizeof c->last, "%s", msg);
}

static void test_versions_and_statuses(void) {
    CHECK(diffuse_version() == DIFFUSE_VERSION_NUMBER, "diffuse_version %u", diffuse_version());
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", DIFFUSE_VERSION_MAJOR, DIFFUSE_VERSION_MINOR, DIFFUSE_VERSION_PATCH);
    CHECK(strcmp(diffuse_version_string(), want) == 0, "version string %s", diffuse_version_string());
    const char *seen[64] = {0};
    int n = 0;
#define STATUS_ITEM(name, value, msg) seen[n++] = diffuse_status_string(name);
    DIFFUSE_STATUS_LIST(STATUS_ITEM)
#undef STATUS_ITEM
    for (int i = 0; i < n; i++) {
        CHECK(seen[i] && seen[i][0], "status %d has an empty string", i);
        for (int j = 0; j < i; j++) CHECK(strcmp(seen[i], seen[j]) != 0, "statuses %d and %d share a string", i, j);
    }
    CHECK(strcmp(diffuse_status_string((diffuse_status)9999), "unknown status") == 0, "unknown status string");
    CHECK(strcmp(diffuse_status_string((diffuse_status)-1), "unknown status") == 0, "negative status string");
}

static void test_params_init(void) {
    diffuse_model_params_init(NULL);
    diffuse_ctx_params_init(NULL);
    diffuse_generate_params_init(NULL);
    diffuse_edit_params_init(NULL);
    diffuse_variation_params_init(NULL);
    diffuse_generate_params g;
    memset(&g, 0xAB, sizeof g);
    diffuse_generate_params_init(&g);
    CHECK(g.struct_size == sizeof g, "generate struct_size %u", g.struct_size);
    CHECK(g.n_images == 1 && g.steps == 30 && fabsf(g.guidance_scale - 7.5f) < 1e-6f, "generate defaults");
    CHECK(g.prompt && g.negative_prompt == NULL && g.width == 0 && g.tile_x == 0, "generate pointer defaults");
    diffuse_variation_params v;
    diffuse_variation_params_init(&v);
    CHECK(fabsf(v.strength - 0.7f) < 1e-6f && v.prompt == NULL, "variation defaults");
    diffuse_edit_params e;
    diffuse_edit_params_init(&e);
    CHECK(fabsf(e.strength - 1.0f) < 1e-6f && e.mask == NULL, "edit defaults");
    diffuse_ctx_params c;
    diffuse_ctx_params_init(&c);
    CHECK(c.device == DIFFUSE_DEVICE_AUTO && c.n_threads == 0 && c.memory_budget == 0, "ctx defaults");
    diffuse_images_free(NULL);
    diffuse_ctx_free(NULL);
    diffuse_model_free(NULL);
    CHECK(diffuse_ctx_last_error(NULL)[0] != '\0', "last_error(NULL) says something");
}

static void test_model_load_errors(void) {
    diffuse_model *m = (diffuse_model *)(uintptr_t)0x1; /* poisoned: must become NULL */
    char err[512] = "poison";
    log_capture cap = {0};
    diffuse_model_params p;
    diffuse_model_params_init(&p);
    p.error_buf = err;
    p.error_buf_size = sizeof err;
    p.log_fn = capture_log;
    p.log_user = &cap;

    CHECK_STATUS(diffuse_model_load(NULL, &p, &m), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(m == NULL, "out_model not cleared");
    CHECK(strstr(err, "path") != NULL, "message names the NULL path: '%s'", err);
    CHECK(cap.count == 1 && cap.last_level == DIFFUSE_LOG_ERROR, "error logged once (count %d)", cap.count);
    CHECK_STATUS(diffuse_model_load("x", &p, NULL), DIFFUSE_ERR_INVALID_ARGUMENT);

    CHECK_STATUS(diffuse_model_load("/nonexistent/diffuse-model", &p, &m), DIFFUSE_ERR_NOT_FOUND);
    CHECK(strstr(err, "/nonexistent/diffuse-model") != NULL, "message names the path: '%s'", err);

    diffuse_model_params small = p;
    small.struct_size = 4;
    CHECK_STATUS(diffuse_model_load(model_dir(), &small, &m), DIFFUSE_ERR_INVALID_ARGUMENT);
    diffuse_model_params bad = p;
    bad.weight_type = (diffuse_weight_type)77;
    CHECK_STATUS(diffuse_model_load(model_dir(), &bad, &m), DIFFUSE_ERR_INVALID_ARGUMENT);
    bad.weight_type = DIFFUSE_WEIGHTS_F16;
    CHECK_STATUS(diffuse_model_load(model_dir(), &bad, &m), DIFFUSE_ERR_UNSUPPORTED);
    CHECK(m == NULL, "no model after failures");
}

static void test_ctx_errors(const diffuse_model *model) {
    diffuse_ctx *ctx = (diffuse_ctx *)(uintptr_t)0x1;
    CHECK_STATUS(diffuse_ctx_create(NULL, NULL, &ctx), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(ctx == NULL, "ctx not cleared");
    CHECK_STATUS(diffuse_ctx_create(model, NULL, NULL), DIFFUSE_ERR_INVALID_ARGUMENT);
    diffuse_ctx_params p;
    diffuse_ctx_params_init(&p);
    p.device = (diffuse_device)9;
    CHECK_STATUS(diffuse_ctx_create(model, &p, &ctx), DIFFUSE_ERR_INVALID_ARGUMENT);
    diffuse_ctx_params_init(&p);
    p.n_threads = -3;
    CHECK_STATUS(diffuse_ctx_create(model, &p, &ctx), DIFFUSE_ERR_INVALID_ARGUMENT);
    diffuse_ctx_params_init(&p);
    p.device = DIFFUSE_DEVICE_CUDA;
    log_capture cap = {0};
    p.log_fn = capture_log;
    p.log_user = &cap;
    CHECK_STATUS(diffuse_ctx_create(model, &p, &ctx), DIFFUSE_ERR_NO_DEVICE);
    CHECK(cap.count == 1 && strstr(cap.last, "CUDA"), "CUDA refusal logged: '%s'", cap.last);
    diffuse_ctx_params_init(&p);
    p.device = DIFFUSE_DEVICE_CPU;
    p.precision = DIFFUSE_PRECISION_F16;
    CHECK_STATUS(diffuse_ctx_create(model, &p, &ctx), DIFFUSE_ERR_UNSUPPORTED);
    diffuse_ctx_params_init(&p);
    p.struct_size = 8;
    CHECK_STATUS(diffuse_ctx_create(model, &p, &ctx), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(ctx == NULL, "no ctx after failures");
}

static void test_generate_args(diffuse_ctx *ctx) {
    diffuse_images *out = (diffuse_images *)(uintptr_t)0x1;
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    CHECK_STATUS(diffuse_generate(NULL, &g, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL, "out_images not cleared");
    CHECK_STATUS(diffuse_generate(ctx, NULL, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(strstr(diffuse_ctx_last_error(ctx), "params"), "message: %s", diffuse_ctx_last_error(ctx));
    CHECK_STATUS(diffuse_generate(ctx, &g, NULL), DIFFUSE_ERR_INVALID_ARGUMENT);

    struct { const char *what; diffuse_generate_params p; } bad[8];
    int nb = 0;
    for (int i = 0; i < 8; i++) diffuse_generate_params_init(&bad[i].p);
    bad[nb].what = "width 100"; bad[nb++].p.width = 100;
    bad[nb].what = "n_images 0"; bad[nb++].p.n_images = 0;
    bad[nb].what = "n_images 17"; bad[nb++].p.n_images = 17;
    bad[nb].what = "steps 0"; bad[nb++].p.steps = 0;
    bad[nb].what = "guidance NaN"; bad[nb++].p.guidance_scale = NAN;
    bad[nb].what = "sampler 99"; bad[nb++].p.sampler = (diffuse_sampler)99;
    bad[nb].what = "prompt NULL"; bad[nb++].p.prompt = NULL;
    bad[nb].what = "struct_size 4"; bad[nb++].p.struct_size = 4;
    for (int i = 0; i < nb; i++) {
        diffuse_status st = diffuse_generate(ctx, &bad[i].p, &out);
        CHECK(st == DIFFUSE_ERR_INVALID_ARGUMENT, "generate with %s: %s", bad[i].what, diffuse_status_string(st));
        CHECK(diffuse_ctx_last_error(ctx)[0] != '\0', "generate with %s left no message", bad[i].what);
    }
    /* A valid call generates (conformance with diffusers is test_pipeline's job). */
    g.prompt = "a red circle";
    g.steps = 2;
    g.output.format = DIFFUSE_PIXEL_BGRA8;
    CHECK_STATUS(diffuse_generate(ctx, &g, &out), DIFFUSE_OK);
    CHECK(out && out->count == 1 && out->images[0].width == 64 && out->images[0].height == 64 &&
              out->images[0].stride == 256 && out->seeds[0] == g.seed && out->images[0].data[3] == 255,
          "generated image description");
    CHECK(diffuse_ctx_last_error(ctx)[0] == '\0', "message after success: %s", diffuse_ctx_last_error(ctx));
    diffuse_images_free(out);
    out = NULL;
    g.tile_x = 2; /* 0 or 1 */
    CHECK_STATUS(diffuse_generate(ctx, &g, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    g.tile_x = 0;
}

/* A prompt longer than the text encoder's 77 positions is truncated as
 * diffusers does, with a warning that says how many tokens were dropped. */
static void test_long_prompt(const diffuse_model *model) {
    log_capture cap = {0};
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.log_fn = capture_log;
    cp.log_user = &cap;
    diffuse_ctx *ctx = NULL;
    CHECK_STATUS(diffuse_ctx_create(model, &cp, &ctx), DIFFUSE_OK);
    if (!ctx) return;
    char prompt[2048] = "";
    for (int i = 0; i < 100; i++) strcat(prompt, "red ");
    size_t count = 0;
    CHECK_STATUS(diffuse_tokenize(model, prompt, NULL, 0, &count), DIFFUSE_OK);
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    g.prompt = prompt;
    g.steps = 1;
    diffuse_images *out = NULL;
    CHECK_STATUS(diffuse_generate(ctx, &g, &out), DIFFUSE_OK);
    char want[64];
    snprintf(want, sizeof want, "%zu tokens", count - 77); /* count includes start and end */
    CHECK(cap.count >= 1 && cap.last_level == DIFFUSE_LOG_WARN && strstr(cap.last, want),
          "long prompt warning (want '%s'): '%s'", want, cap.last);
    diffuse_images_free(out);
    diffuse_ctx_free(ctx);
}

static void test_edit_variation_args(diffuse_ctx *ctx) {
    uint8_t rgb[8 * 8 * 3], rgba[8 * 8 * 4];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof rgba; i++) rgba[i] = (uint8_t)(i * 5);
    diffuse_image im_rgb = {8, 8, 24, DIFFUSE_PIXEL_RGB8, DIFFUSE_ORIGIN_TOP_LEFT, DIFFUSE_COLOR_SRGB, rgb};
    diffuse_image im_rgba = {8, 8, 32, DIFFUSE_PIXEL_RGBA8, DIFFUSE_ORIGIN_TOP_LEFT, DIFFUSE_COLOR_SRGB, rgba};
    diffuse_image small_mask = {4, 4, 12, DIFFUSE_PIXEL_RGB8, DIFFUSE_ORIGIN_TOP_LEFT, DIFFUSE_COLOR_SRGB, rgb};
    diffuse_image bad_stride = im_rgb;
    bad_stride.stride = 10;
    diffuse_images *out = NULL;

    diffuse_edit_params e;
    diffuse_edit_params_init(&e);
    e.prompt = "blue";
    CHECK_STATUS(diffuse_edit(ctx, &e, &out), DIFFUSE_ERR_INVALID_ARGUMENT); /* no image */
    e.image = &im_rgb;
    CHECK_STATUS(diffuse_edit(ctx, &e, &out), DIFFUSE_ERR_INVALID_ARGUMENT); /* RGB8 without mask */
    CHECK(strstr(diffuse_ctx_last_error(ctx), "alpha"), "message: %s", diffuse_ctx_last_error(ctx));
    e.mask = &small_mask;
    CHECK_STATUS(diffuse_edit(ctx, &e, &out), DIFFUSE_ERR_INVALID_ARGUMENT); /* mask size */
    e.mask = NULL;
    e.image = &bad_stride;
    CHECK_STATUS(diffuse_edit(ctx, &e, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    e.image = &im_rgba;
    e.strength = 1.5f;
    CHECK_STATUS(diffuse_edit(ctx, &e, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    e.strength = 0.0f;
    CHECK_STATUS(diffuse_edit(ctx, &e, &out), DIFFUSE_ERR_INVALID_ARGUMENT); /* strength must be > 0 */
    e.strength = 0.01f;
    CHECK_STATUS(diffuse_edit(ctx, &e, &out), DIFFUSE_ERR_INVALID_ARGUMENT); /* no step of 30 left */
    CHECK(strstr(diffuse_ctx_last_error(ctx), "strength"), "message: %s", diffuse_ctx_last_error(ctx));

    diffuse_variation_params v;
    diffuse_variation_params_init(&v);
    CHECK_STATUS(diffuse_variation(ctx, &v, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    v.image = &im_rgb;
    v.strength = -0.1f;
    CHECK_STATUS(diffuse_variation(ctx, &v, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    v.strength = 0.7f;
    v.output.format = (diffuse_pixel_format)7;
    CHECK_STATUS(diffuse_variation(ctx, &v, &out), DIFFUSE_ERR_INVALID_ARGUMENT);
    v.output.format = DIFFUSE_PIXEL_RGBA8;
    v.strength = 0.01f;
    CHECK_STATUS(diffuse_variation(ctx, &v, &out), DIFFUSE_ERR_INVALID_ARGUMENT); /* no step of 30 left */
    CHECK(out == NULL, "no images on failure");
}

int main(void) {
    test_versions_and_statuses();
    test_params_init();
    test_model_load_errors();

    diffuse_model *model = NULL;
    char err[1024] = "";
    diffuse_model_params mp;
    diffuse_model_params_init(&mp);
    mp.error_buf = err;
    mp.error_buf_size = sizeof err;
    diffuse_status st = diffuse_model_load(model_dir(), &mp, &model);
    CHECK(st == DIFFUSE_OK, "loading %s: %s: %s", model_dir(), diffuse_status_string(st), err);
    if (model) {
        test_ctx_errors(model);
        diffuse_ctx_params cp;
        diffuse_ctx_params_init(&cp);
        cp.device = DIFFUSE_DEVICE_CPU;
        cp.n_threads = 1;
        diffuse_ctx *ctx = NULL;
        CHECK_STATUS(diffuse_ctx_create(model, &cp, &ctx), DIFFUSE_OK);
        if (ctx) {
            test_generate_args(ctx);
            test_edit_variation_args(ctx);
            diffuse_ctx_free(ctx);
        }
        test_long_prompt(model);
        diffuse_model_info info;
        memset(&info, 0xAB, sizeof info);
        info.struct_size = sizeof info;
        CHECK_STATUS(diffuse_model_get_info(model, &info), DIFFUSE_OK);
        /* tests/fixtures/models/tiny-sd1: see scripts/make_tiny_models.py */
        CHECK(info.unet_in_channels == 4 && info.latent_channels == 4 && info.vae_scale_factor == 2,
              "info channels %u/%u scale %u", info.unet_in_channels, info.latent_channels, info.vae_scale_factor);
        CHECK(info.text_hidden_size == 32 && info.text_layers == 5 && info.v_prediction == 0, "info text %u/%u",
              info.text_hidden_size, info.text_layers);
        CHECK(info.unet_parameters > 0 && info.vae_parameters > 0 && info.text_encoder_parameters > 0 &&
                  info.weight_bytes > info.unet_parameters,
              "info sizes");
        info.struct_size = 8;
        CHECK_STATUS(diffuse_model_get_info(model, &info), DIFFUSE_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(diffuse_model_get_info(NULL, &info), DIFFUSE_ERR_INVALID_ARGUMENT);
        int32_t ids[8];
        size_t count = 99;
        CHECK_STATUS(diffuse_tokenize(model, NULL, ids, 8, &count), DIFFUSE_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(diffuse_tokenize(model, "hi", NULL, 8, &count), DIFFUSE_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(diffuse_tokenize(model, "bad \xff utf-8", ids, 8, &count), DIFFUSE_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(diffuse_tokenize(model, "a red circle", NULL, 0, &count), DIFFUSE_OK);
        CHECK(count >= 3, "tokenize count %zu", count);
        /* capacity too small: the first ids are written and count says how many the text has */
        int32_t few[2] = {-1, -1};
        size_t need = 0;
        CHECK_STATUS(diffuse_tokenize(model, "a red circle", few, 2, &need), DIFFUSE_OK);
        CHECK(need == count && few[0] >= 0 && few[1] >= 0, "capacity 2: count %zu (want %zu)", need, count);
        /* a 1 MB prompt: bounded time (linear in the text) */
        size_t big_n = (size_t)1 << 20;
        char *big = malloc(big_n + 1);
        for (size_t i = 0; i < big_n; i++) big[i] = "red circle, "[i % 12];
        big[big_n] = '\0';
        clock_t c0 = clock();
        CHECK_STATUS(diffuse_tokenize(model, big, few, 2, &need), DIFFUSE_OK);
        double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
        CHECK(need > 100000 && secs < 10.0, "1 MB prompt: %zu ids in %.2f s", need, secs);
        free(big);
        diffuse_model_free(model);
    }
    /* A single-file checkpoint carries no tokenizer: the built-in CLIP
     * vocabulary gives the well-known ids. */
    char single[4096];
    snprintf(single, sizeof single, "%s-single.safetensors", model_dir());
    st = diffuse_model_load(single, &mp, &model);
    CHECK(st == DIFFUSE_OK, "loading %s: %s: %s", single, diffuse_status_string(st), err);
    if (model) {
        static const int32_t want[7] = {49406, 320, 1125, 539, 320, 2368, 49407};
        int32_t ids[4];
        size_t count = 0;
        CHECK_STATUS(diffuse_tokenize(model, "A photo of a  cat", ids, 4, &count), DIFFUSE_OK);
        CHECK(count == 7 && memcmp(ids, want, sizeof ids) == 0, "ids of 'a photo of a cat': count %zu, %d %d %d %d",
              count, ids[0], ids[1], ids[2], ids[3]);
        diffuse_model_free(model);
    }
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
