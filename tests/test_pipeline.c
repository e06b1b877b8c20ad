/*
 * test_pipeline.c - whole pipelines through the public API against
 * diffusers' pipelines on the tiny test models (fixtures from
 * scripts/make_pipeline_fixtures.py): generate, variation (img2img) and
 * edit (inpainting, 4- and 9-channel UNets); the 8-bit images must agree
 * within 1/255 on at least 99.9% of values, and edit must return the pixels
 * its mask keeps unchanged. Also cancellation, progress and the feather.
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
    uint8_t *input;  /* (H, W, 3) variation/edit input, else NULL */
    uint8_t *mask;   /* (H, W) edit mask bytes (see mask_mode), else NULL */
    uint8_t *images; /* (n, H, W, 3) */
    size_t bytes;
} pipe_fixture;

static const char *jstr(struct json_object *o, const char *k) {
    return json_object_get_string(json_object_object_get(o, k));
}
static double jnum(struct json_object *o, const char *k) {
    return json_object_get_double(json_object_object_get(o, k));
}

/* Reads @bytes into a new buffer at *@out; nonzero on a short file. */
static int read_block(FILE *f, size_t bytes, uint8_t **out) {
    *out = malloc(bytes);
    return !*out || fread(*out, 1, bytes, f) != bytes;
}

static void fixture_free(pipe_fixture *fx) {
    json_object_put(fx->meta);
    free(fx->input);
    free(fx->mask);
    free(fx->images);
}

static int fixture_load(const char *name, pipe_fixture *fx) {
    char path[4096], line[8192];
    snprintf(path, sizeof path, "%s/pipeline/%s.bin", fixtures(), name);
    FILE *f = fopen(path, "rb");
    if (!f) return printf("FAIL cannot open %s\n", path), 1;
    int bad = !fgets(line, sizeof line, f) || strcmp(line, "DIFFUSE-FIXTURE pipeline 1\n") != 0;
    bad = bad || !fgets(line, sizeof line, f) || !(fx->meta = json_tokener_parse(line));
    if (!bad) {
        const size_t n = (size_t)jnum(fx->meta, "n"), w = (size_t)jnum(fx->meta, "width");
        const size_t h = (size_t)jnum(fx->meta, "height");
        const char *call = jstr(fx->meta, "call");
        fx->bytes = n * w * h * 3;
        if (strcmp(call, "generate") != 0) bad = read_block(f, w * h * 3, &fx->input);
        if (!bad && strcmp(call, "edit") == 0) bad = read_block(f, w * h, &fx->mask);
        bad = bad || read_block(f, fx->bytes, &fx->images);
    }
    fclose(f);
    if (bad) printf("FAIL malformed fixture %s\n", path);
    return bad;
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
    const int ok = total == fx->bytes && frac >= 0.999 && max_diff <= 3; /* 1/255 almost everywhere, 3/255 all */
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
    g.tile_x = (uint32_t)json_object_get_int(json_object_object_get(fx.meta, "tile_x")); /* 0 when absent */
    g.tile_y = (uint32_t)json_object_get_int(json_object_object_get(fx.meta, "tile_y"));
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
    fixture_free(&fx);
}

/* A context on the CPU, with @log receiving progress when given. */
typedef struct progress_log progress_log;
static int on_progress(const diffuse_progress *p, void *user);

static diffuse_ctx *ctx_new(diffuse_model *model, progress_log *log) {
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = DIFFUSE_DEVICE_CPU;
    if (log) {
        cp.progress_fn = on_progress;
        cp.progress_user = log;
    }
    diffuse_ctx *ctx = NULL;
    diffuse_status st = diffuse_ctx_create(model, &cp, &ctx);
    if (st != DIFFUSE_OK) printf("FAIL creating a context: %s\n", diffuse_status_string(st)), failures++;
    return ctx;
}

/* The fixture's (H, W, 3) pixels as a host image laid out as @layout says
 * ("rgb", "rgba", "rgba_bottom_left", "bgra_bottom_left"); alpha from
 * @alpha (H, W) or 255. The caller frees .data. */
static diffuse_image host_image(const uint8_t *rgb, const uint8_t *alpha, uint32_t w, uint32_t h, const char *layout) {
    const int four = strcmp(layout, "rgb") != 0, bgra = strncmp(layout, "bgra", 4) == 0;
    const int flip = strstr(layout, "bottom_left") != NULL, bpp = four ? 4 : 3;
    diffuse_image im = {w, h, w * (uint32_t)bpp + 4, four ? (bgra ? DIFFUSE_PIXEL_BGRA8 : DIFFUSE_PIXEL_RGBA8)
                                                            : DIFFUSE_PIXEL_RGB8,
                        flip ? DIFFUSE_ORIGIN_BOTTOM_LEFT : DIFFUSE_ORIGIN_TOP_LEFT, DIFFUSE_COLOR_SRGB, NULL};
    im.data = calloc((size_t)im.stride * h, 1);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            const uint8_t *s = rgb + ((size_t)y * w + x) * 3;
            uint8_t *d = im.data + (size_t)(flip ? h - 1 - y : y) * im.stride + (size_t)x * bpp;
            for (int c = 0; c < 3; c++) d[bgra ? 2 - c : c] = s[c];
            if (four) d[3] = alpha ? alpha[(size_t)y * w + x] : 255;
        }
    return im;
}

/* Runs a variation case: prompt, strength, sampler and input layout from the fixture. */
static void check_variation(diffuse_model *model, const char *name) {
    pipe_fixture fx = {0};
    if (fixture_load(name, &fx)) {
        failures++;
        return;
    }
    const uint32_t w = (uint32_t)jnum(fx.meta, "width"), h = (uint32_t)jnum(fx.meta, "height");
    uint8_t *alpha = malloc((size_t)w * h); /* ignored by variation: any values */
    for (size_t i = 0; i < (size_t)w * h; i++) alpha[i] = (uint8_t)(i * 37 + 11);
    diffuse_image in = host_image(fx.input, alpha, w, h, jstr(fx.meta, "input_format"));
    diffuse_ctx *ctx = ctx_new(model, NULL);
    diffuse_variation_params v;
    diffuse_variation_params_init(&v);
    v.image = &in;
    v.prompt = jstr(fx.meta, "prompt");
    v.negative_prompt = jstr(fx.meta, "negative_prompt");
    v.n_images = (uint32_t)jnum(fx.meta, "n");
    v.steps = (uint32_t)jnum(fx.meta, "steps");
    v.guidance_scale = (float)jnum(fx.meta, "guidance");
    v.strength = (float)jnum(fx.meta, "strength");
    v.sampler = sampler_of(jstr(fx.meta, "sampler"));
    v.seed = (uint64_t)json_object_get_int64(json_object_object_get(fx.meta, "seed"));
    diffuse_images *out = NULL;
    diffuse_status st = ctx ? diffuse_variation(ctx, &v, &out) : DIFFUSE_ERR_INVALID_ARGUMENT;
    if (st != DIFFUSE_OK) {
        printf("FAIL %s: %s: %s\n", name, diffuse_status_string(st), ctx ? diffuse_ctx_last_error(ctx) : "");
        failures++;
    } else {
        compare(name, out, &fx);
    }
    diffuse_images_free(out);
    diffuse_ctx_free(ctx);
    free(in.data);
    free(alpha);
    fixture_free(&fx);
}

/* Every pixel the mask keeps comes back byte for byte (RGB8 output). */
static void check_kept(const char *name, const diffuse_images *out, const pipe_fixture *fx, int alpha_mode) {
    size_t kept = 0, changed = 0;
    for (uint32_t i = 0; i < out->count; i++) {
        const diffuse_image *im = &out->images[i];
        for (uint32_t y = 0; y < im->height; y++)
            for (uint32_t x = 0; x < im->width; x++) {
                const size_t p = (size_t)y * im->width + x;
                if (alpha_mode ? fx->mask[p] == 0 : fx->mask[p] >= 128) continue;
                kept++;
                changed += memcmp(im->data + (size_t)y * im->stride + x * 3, fx->input + p * 3, 3) != 0;
            }
    }
    const int ok = kept > 0 && changed == 0;
    printf("%s %s: %zu kept pixels, %zu changed\n", ok ? "PASS" : "FAIL", name, kept, changed);
    failures += !ok;
}

/* Runs an edit case on the fixture's model: the alpha convention or a
 * separate gray mask (RGB8), then compares and checks the kept pixels. */
static void check_edit(diffuse_model *base, diffuse_model *inpaint, const char *name) {
    pipe_fixture fx = {0};
    if (fixture_load(name, &fx)) {
        failures++;
        return;
    }
    const uint32_t w = (uint32_t)jnum(fx.meta, "width"), h = (uint32_t)jnum(fx.meta, "height");
    const int alpha_mode = strcmp(jstr(fx.meta, "mask_mode"), "alpha") == 0;
    diffuse_image in = host_image(fx.input, alpha_mode ? fx.mask : NULL, w, h, jstr(fx.meta, "input_format"));
    uint8_t *gray = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) gray[i] = fx.mask[i / 3];
    diffuse_image mask = host_image(gray, NULL, w, h, "rgb");
    diffuse_ctx *ctx = ctx_new(strcmp(jstr(fx.meta, "model"), "tiny-sd1-inpaint") == 0 ? inpaint : base, NULL);
    diffuse_edit_params e;
    diffuse_edit_params_init(&e);
    e.image = &in;
    e.mask = alpha_mode ? NULL : &mask;
    e.prompt = jstr(fx.meta, "prompt");
    e.negative_prompt = jstr(fx.meta, "negative_prompt");
    e.n_images = (uint32_t)jnum(fx.meta, "n");
    e.steps = (uint32_t)jnum(fx.meta, "steps");
    e.guidance_scale = (float)jnum(fx.meta, "guidance");
    e.strength = (float)jnum(fx.meta, "strength");
    e.sampler = sampler_of(jstr(fx.meta, "sampler"));
    e.seed = (uint64_t)json_object_get_int64(json_object_object_get(fx.meta, "seed"));
    diffuse_images *out = NULL;
    diffuse_status st = ctx ? diffuse_edit(ctx, &e, &out) : DIFFUSE_ERR_INVALID_ARGUMENT;
    if (st != DIFFUSE_OK) {
        printf("FAIL %s: %s: %s\n", name, diffuse_status_string(st), ctx ? diffuse_ctx_last_error(ctx) : "");
        failures++;
    } else {
        compare(name, out, &fx);
        check_kept(name, out, &fx, alpha_mode);
    }
    diffuse_images_free(out);
    diffuse_ctx_free(ctx);
    free(in.data);
    free(mask.data);
    free(gray);
    fixture_free(&fx);
}

/* Progress arrives for every stage; cancelling mid-denoise returns
 * DIFFUSE_CANCELLED, no images, and the context works afterwards. */
struct progress_log {
    int calls, denoise_steps, cancel_at, encode_reports, encode_before_denoise, cancel_in_encode;
    diffuse_stage last_stage;
};

static int on_progress(const diffuse_progress *p, void *user) {
    progress_log *l = user;
    l->calls++;
    l->last_stage = p->stage;
    if (p->stage == DIFFUSE_STAGE_DENOISE) l->denoise_steps++;
    if (p->stage == DIFFUSE_STAGE_ENCODE) {
        l->encode_reports++;
        l->encode_before_denoise = l->denoise_steps == 0;
    }
    if (l->cancel_in_encode && p->stage == DIFFUSE_STAGE_ENCODE) return 1;
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

/* A 32x32 picture with alpha 0 (edit) in the square [10, 22)^2. */
static diffuse_image edit_test_image(void) {
    uint8_t rgb[32 * 32 * 3], alpha[32 * 32];
    for (int i = 0; i < 32 * 32; i++) {
        const int x = i % 32, y = i / 32;
        rgb[3 * i] = (uint8_t)(x * 8), rgb[3 * i + 1] = (uint8_t)(y * 8), rgb[3 * i + 2] = (uint8_t)(x * y);
        alpha[i] = x >= 10 && x < 22 && y >= 10 && y < 22 ? 0 : 255;
    }
    return host_image(rgb, alpha, 32, 32, "rgba");
}

/* Edit reports ENCODE before DENOISE; cancelling in either stage returns
 * DIFFUSE_CANCELLED with no images, and the context works afterwards. */
static void check_edit_cancel(diffuse_model *model) {
    progress_log log = {0};
    diffuse_ctx *ctx = ctx_new(model, &log);
    diffuse_image im = edit_test_image();
    diffuse_edit_params e;
    diffuse_edit_params_init(&e);
    e.image = &im;
    e.prompt = "a circle";
    e.steps = 6;
    e.n_images = 2;
    diffuse_images *out = NULL;
    log.cancel_at = 2;
    diffuse_status st = ctx ? diffuse_edit(ctx, &e, &out) : DIFFUSE_ERR_INVALID_ARGUMENT;
    int ok = st == DIFFUSE_CANCELLED && !out && log.denoise_steps == 2 && strstr(diffuse_ctx_last_error(ctx), "cancel");
    printf("%s edit: cancel after 2 denoising steps: %s\n", ok ? "PASS" : "FAIL",
           ctx ? diffuse_ctx_last_error(ctx) : "");
    failures += !ok;
    log = (progress_log){.cancel_in_encode = 1};
    st = ctx ? diffuse_edit(ctx, &e, &out) : DIFFUSE_ERR_INVALID_ARGUMENT;
    ok = st == DIFFUSE_CANCELLED && !out && log.denoise_steps == 0 && log.encode_reports == 1;
    printf("%s edit: cancel in the VAE encode: %s\n", ok ? "PASS" : "FAIL", diffuse_status_string(st));
    failures += !ok;
    log = (progress_log){0};
    e.n_images = 1;
    st = ctx ? diffuse_edit(ctx, &e, &out) : DIFFUSE_ERR_INVALID_ARGUMENT;
    ok = st == DIFFUSE_OK && out && out->count == 1 && log.last_stage == DIFFUSE_STAGE_DECODE &&
         log.denoise_steps >= 6 && log.encode_reports == 2 && log.encode_before_denoise;
    printf("%s edit: context usable after cancel: %s, %d encode and %d denoise reports\n", ok ? "PASS" : "FAIL",
           diffuse_status_string(st), log.encode_reports, log.denoise_steps);
    failures += !ok;
    diffuse_images_free(out);
    diffuse_ctx_free(ctx);
    free(im.data);
}

/* sqrt by Newton's method (the test links without libm). */
static double newton_sqrt(double v) {
    double r = v > 1.0 ? v : 1.0;
    for (int i = 0; i < 60 && v > 0.0; i++) r = 0.5 * (r + v / r);
    return v > 0.0 ? r : 0.0;
}

/* mask_feather F: repainted pixels as with F = 0, kept pixels farther than F
 * from the edit unchanged, nearer ones moved toward the repainted image by
 * at most (1 - d / (F + 1)) of the way, and some of them moved. */
static void check_feather(diffuse_model *model) {
    diffuse_ctx *ctx = ctx_new(model, NULL);
    diffuse_image im = edit_test_image();
    diffuse_edit_params e;
    diffuse_edit_params_init(&e);
    e.image = &im;
    e.prompt = "a circle";
    e.steps = 3;
    diffuse_images *sharp = NULL, *soft = NULL;
    diffuse_status st = ctx ? diffuse_edit(ctx, &e, &sharp) : DIFFUSE_ERR_INVALID_ARGUMENT;
    e.mask_feather = 3.0f;
    if (st == DIFFUSE_OK) st = diffuse_edit(ctx, &e, &soft);
    int bad = st != DIFFUSE_OK, moved = 0;
    for (int y = 0; y < 32 && !bad; y++)
        for (int x = 0; x < 32; x++) {
            const int dx = x < 10 ? 10 - x : x >= 22 ? x - 21 : 0, dy = y < 10 ? 10 - y : y >= 22 ? y - 21 : 0;
            const double d = newton_sqrt((double)(dx * dx + dy * dy)), k = d / 4.0 > 1.0 ? 1.0 : d / 4.0;
            for (int c = 0; c < 3; c++) {
                const int s = soft->images[0].data[(size_t)y * soft->images[0].stride + x * 3 + c];
                const int sh = sharp->images[0].data[(size_t)y * sharp->images[0].stride + x * 3 + c];
                const int in = im.data[(size_t)y * im.stride + x * 4 + c];
                if (d == 0.0) bad |= s != sh;
                else bad |= abs(s - in) > (int)((1.0 - k) * 255.0 + 1.0);
                moved += d > 0.0 && s != in;
            }
        }
    const int ok = !bad && moved > 0;
    printf("%s edit: mask_feather 3: %s, %d kept values blended\n", ok ? "PASS" : "FAIL",
           st == DIFFUSE_OK ? "ok" : diffuse_ctx_last_error(ctx), moved);
    failures += !ok;
    diffuse_images_free(sharp);
    diffuse_images_free(soft);
    diffuse_ctx_free(ctx);
    free(im.data);
}

/* Calls refused before any work: each with its status, a message and no images. */
static void check_refused(diffuse_model *model, diffuse_model *inpaint) {
    diffuse_ctx *ctx = ctx_new(model, NULL), *ctx9 = ctx_new(inpaint, NULL);
    diffuse_image im = edit_test_image(), odd = im;
    odd.width = 28; /* not a multiple of 8 */
    diffuse_images *out = NULL;
    diffuse_variation_params v;
    diffuse_variation_params_init(&v);
    v.image = &im;
    diffuse_status st = ctx9 ? diffuse_variation(ctx9, &v, &out) : DIFFUSE_ERR_INVALID_ARGUMENT;
    int ok = st == DIFFUSE_ERR_UNSUPPORTED && !out && strstr(diffuse_ctx_last_error(ctx9), "inpainting");
    printf("%s variation on a 9-channel model: %s\n", ok ? "PASS" : "FAIL", ctx9 ? diffuse_ctx_last_error(ctx9) : "");
    failures += !ok;
    diffuse_edit_params e;
    diffuse_edit_params_init(&e);
    e.image = &odd;
    st = ctx ? diffuse_edit(ctx, &e, &out) : DIFFUSE_ERR_UNSUPPORTED;
    ok = st == DIFFUSE_ERR_INVALID_ARGUMENT && !out && strstr(diffuse_ctx_last_error(ctx), "multiples of 8");
    printf("%s edit of a 28x32 image: %s\n", ok ? "PASS" : "FAIL", ctx ? diffuse_ctx_last_error(ctx) : "");
    failures += !ok;
    e.image = &im;
    e.strength = 0.02f;
    st = ctx ? diffuse_edit(ctx, &e, &out) : DIFFUSE_ERR_UNSUPPORTED;
    ok = st == DIFFUSE_ERR_INVALID_ARGUMENT && !out && strstr(diffuse_ctx_last_error(ctx), "no step");
    printf("%s edit with strength 0.02 of 30 steps: %s\n", ok ? "PASS" : "FAIL",
           ctx ? diffuse_ctx_last_error(ctx) : "");
    failures += !ok;
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = DIFFUSE_DEVICE_CPU;
    cp.memory_budget = 1 << 20;
    diffuse_ctx *small = NULL;
    st = diffuse_ctx_create(model, &cp, &small);
    e.strength = 1.0f;
    if (st == DIFFUSE_OK) st = diffuse_edit(small, &e, &out);
    ok = st == DIFFUSE_ERR_OUT_OF_MEMORY && !out && strstr(diffuse_ctx_last_error(small), "memory_budget");
    printf("%s edit within a 1 MiB memory budget: %s\n", ok ? "PASS" : "FAIL",
           small ? diffuse_ctx_last_error(small) : diffuse_status_string(st));
    failures += !ok;
    diffuse_ctx_free(small);
    diffuse_ctx_free(ctx);
    diffuse_ctx_free(ctx9);
    free(im.data);
}

static diffuse_model *load_model(const char *name) {
    char path[4096], err[1024] = "";
    snprintf(path, sizeof path, "%s/models/%s", fixtures(), name);
    diffuse_model_params mp;
    diffuse_model_params_init(&mp);
    mp.error_buf = err;
    mp.error_buf_size = sizeof err;
    diffuse_model *model = NULL;
    if (diffuse_model_load(path, &mp, &model) != DIFFUSE_OK) printf("FAIL loading %s: %s\n", path, err);
    return model;
}

int main(void) {
    diffuse_model *model = load_model("tiny-sd1"), *inpaint = load_model("tiny-sd1-inpaint");
    diffuse_model *sd2 = load_model("tiny-sd2");
    if (!model || !inpaint || !sd2) {
        diffuse_model_free(model);
        diffuse_model_free(inpaint);
        diffuse_model_free(sd2);
        return 1;
    }
    /* SD2 layout: linear projections, per-block heads, v-prediction, "!" padding */
    static const char *sd2_cases[] = {"sd2_default", "sd2_euler_rescale", "sd2_dpmpp"};
    for (size_t i = 0; i < sizeof sd2_cases / sizeof sd2_cases[0]; i++) check_generate(sd2, sd2_cases[i]);
    diffuse_model_free(sd2);
    static const char *gen_cases[] = {"gen_default", "gen_euler_a_n2", "gen_ddim_nocfg", "gen_dpmpp_rescale",
                                      "gen_euler", "gen_seamless_xy", "gen_seamless_x"};
    static const char *var_cases[] = {"var_default", "var_euler_a_n2", "var_rgba_bottom_left"};
    static const char *edit_cases[] = {"edit_alpha_s1", "edit_alpha_s075_n2", "edit_inpaint9_n2",
                                       "edit_inpaint9_s06"};
    for (size_t i = 0; i < sizeof gen_cases / sizeof gen_cases[0]; i++) check_generate(model, gen_cases[i]);
    for (size_t i = 0; i < sizeof var_cases / sizeof var_cases[0]; i++) check_variation(model, var_cases[i]);
    for (size_t i = 0; i < sizeof edit_cases / sizeof edit_cases[0]; i++) check_edit(model, inpaint, edit_cases[i]);
    check_cancel(model);
    check_edit_cancel(model);
    check_feather(model);
    check_refused(model, inpaint);
    diffuse_model_free(model);
    diffuse_model_free(inpaint);
    printf("%s\n", failures ? "pipeline: FAILED" : "pipeline: all checks passed");
    return failures ? 1 : 0;
}
