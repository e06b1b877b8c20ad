/*
 * test_vae.c - the AutoencoderKL against diffusers (fixtures from
 * scripts/make_vae_fixtures.py, weights rebuilt from the detweights formula):
 * encoder moments and decoder output for a tiny config (batch 2, and an
 * unsquare image), an SD-shaped config, and tiled encode/decode against
 * enable_tiling() with the seam error vs the whole-image pass; the posterior
 * math on a hand case; load errors; and the tiny-sd1 fixture model's VAE
 * run end to end.
 */
#include "backend.h"
#include "detweights.h"
#include "model/model.h"
#include "nets/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

static void check(int ok, const char *what, const char *detail) {
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", what, detail && *detail ? ": " : "", detail ? detail : "");
    failures += !ok;
}

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct fixture {
    struct json_object *meta, *config;
    int batch, height, width, factor, latent, tiled;
    float *x;             /* (B, 3, H, W) */
    float *moments;       /* (B, 2L, h, w) */
    float *z;             /* (B, L, h, w) unscaled */
    float *decoded;       /* (B, 3, H, W) */
    float *moments_tiled; /* tiled cases: enable_tiling() results */
    float *decoded_tiled;
} fixture;

static int read_line(FILE *f, char *buf, size_t cap) {
    if (!fgets(buf, (int)cap, f)) return 1;
    size_t n = strlen(buf);
    if (n == 0 || buf[n - 1] != '\n') return 1;
    buf[n - 1] = '\0';
    return 0;
}

static int read_floats(FILE *f, float **dst, size_t n) {
    *dst = malloc(n * sizeof(float));
    return !*dst || fread(*dst, sizeof(float), n, f) != n;
}

static int meta_int(const fixture *fx, const char *key) {
    return json_object_get_int(json_object_object_get(fx->meta, key));
}

static int fixture_load(const char *name, fixture *fx) {
    char path[4096];
    static char line[1 << 16];
    const char *dir = getenv("DIFFUSE_FIXTURES");
    snprintf(path, sizeof path, "%s/vae/%s.bin", dir ? dir : "tests/fixtures", name);
    FILE *f = fopen(path, "rb");
    if (!f) return printf("FAIL cannot open %s\n", path), 1;
    int bad = read_line(f, line, sizeof line) || strcmp(line, "DIFFUSE-FIXTURE vae 1") != 0;
    bad = bad || read_line(f, line, sizeof line) || !(fx->meta = json_tokener_parse(line));
    if (!bad) {
        fx->config = json_object_object_get(fx->meta, "config");
        fx->batch = meta_int(fx, "batch");
        fx->height = meta_int(fx, "height");
        fx->width = meta_int(fx, "width");
        fx->factor = meta_int(fx, "factor");
        fx->latent = json_object_get_int(json_object_object_get(fx->config, "latent_channels"));
        fx->tiled = json_object_object_get(fx->meta, "tiled") != NULL;
        const size_t img = (size_t)fx->batch * 3 * fx->height * fx->width;
        const size_t lat = (size_t)fx->batch * fx->latent * (fx->height / fx->factor) * (fx->width / fx->factor);
        bad = read_floats(f, &fx->x, img) || read_floats(f, &fx->moments, 2 * lat) || read_floats(f, &fx->z, lat) ||
              read_floats(f, &fx->decoded, img);
        if (!bad && fx->tiled)
            bad = read_floats(f, &fx->moments_tiled, 2 * lat) || read_floats(f, &fx->decoded_tiled, img);
    }
    fclose(f);
    if (bad) printf("FAIL malformed fixture %s\n", path);
    return bad;
}

static void fixture_free(fixture *fx) {
    json_object_put(fx->meta);
    free(fx->x);
    free(fx->moments);
    free(fx->z);
    free(fx->decoded);
    free(fx->moments_tiled);
    free(fx->decoded_tiled);
}

/* The fixture's parameter list as detweights specs (values hashed from the
 * diffusers name, as the script did). */
static dw_spec *fixture_specs(const fixture *fx, size_t *n) {
    struct json_object *params = json_object_object_get(fx->meta, "params");
    *n = json_object_array_length(params);
    dw_spec *s = calloc(*n, sizeof *s);
    for (size_t i = 0; i < *n; i++) {
        struct json_object *p = json_object_array_get_idx(params, i);
        struct json_object *shape = json_object_array_get_idx(p, 1);
        snprintf(s[i].name, sizeof s[i].name, "%s", json_object_get_string(json_object_array_get_idx(p, 0)));
        snprintf(s[i].value_name, sizeof s[i].value_name, "%s", s[i].name);
        s[i].ndim = (int)json_object_array_length(shape);
        for (int d = 0; d < s[i].ndim; d++)
            s[i].shape[d] = json_object_get_int64(json_object_array_get_idx(shape, (size_t)d));
    }
    return s;
}

/* max|out - ref| / max|ref|; NaN (an unwritten output) gives NaN. */
static double rel_err(const float *out, const float *ref, size_t n) {
    double max_err = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)out[i] - ref[i]);
        if (!(e <= max_err)) max_err = e;
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
    }
    return max_err / max_ref;
}

static void poison(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

/* Uniform in [-1, 1) from a 32-bit LCG. */
static float lcg_uniform(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 8388608.0f - 1.0f;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------ */
/* Reference comparisons                                                     */
/* ------------------------------------------------------------------------ */

/* A loaded model plus a backend whose arena holds @io_floats of caller
 * buffers on top of @work bytes. */
typedef struct rig {
    st_file *weights;
    vae_model *m;
    bk_backend *bk;
} rig;

static int rig_open(const fixture *fx, rig *r) {
    size_t n_specs;
    dw_spec *specs = fixture_specs(fx, &n_specs);
    r->weights = dw_build_file(specs, n_specs);
    free(specs);
    df_error err = {0};
    diffuse_status st = vae_load(r->weights, "", fx->config, &r->m, &err);
    if (st == DIFFUSE_OK) st = bk_cpu_create(0, &r->bk, &err);
    if (st != DIFFUSE_OK) printf("FAIL setup: %s\n", err.msg), failures++;
    return st != DIFFUSE_OK;
}

static void rig_close(rig *r) {
    if (r->bk) r->bk->ops->destroy(r->bk);
    vae_free(r->m);
    dw_free_file(r->weights);
}

/* Reserves @work + the caller buffers and places them: in (n_in floats),
 * out (n_out floats). Returns 0 on success. */
static int rig_buffers(rig *r, size_t work, size_t n_in, size_t n_out, float **in, float **out) {
    bk_release(r->bk, 0);
    if (r->bk->ops->arena_reserve(r->bk, work + (n_in + n_out) * sizeof(float) + 256) != DIFFUSE_OK) return 1;
    *in = bk_alloc(r->bk, n_in * sizeof(float));
    *out = bk_alloc(r->bk, n_out * sizeof(float));
    return !*in || !*out;
}

/* Encode x and decode z (scaled by the caller's rule) vs the fixture; also
 * checks the arena is back where it was after each pass. */
static void check_passes(const char *name, const fixture *fx, rig *r) {
    const vae_model *m = r->m;
    const int B = fx->batch, H = fx->height, W = fx->width, h = H / fx->factor, w = W / fx->factor;
    const size_t img = (size_t)B * 3 * H * W, lat = (size_t)B * fx->latent * h * w;
    char what[160], detail[1200];
    float *in, *out;
    size_t work = vae_workspace_bytes(m, VAE_ENCODE, B, H, W);
    if (!work || rig_buffers(r, work, img, 2 * lat, &in, &out)) {
        check(0, name, "encode arena");
        return;
    }
    memcpy(in, fx->x, img * sizeof(float));
    poison(out, 2 * lat);
    size_t top = r->bk->arena_used;
    double t0 = now_s();
    diffuse_status st = vae_encode(m, r->bk, in, B, H, W, out);
    double rel = rel_err(out, fx->moments, 2 * lat);
    snprintf(what, sizeof what, "%s encode %dx%dx%d -> moments", name, B, H, W);
    snprintf(detail, sizeof detail, "rel err %.3g (%.2f s, workspace %.1f MiB)%s%s", rel, now_s() - t0,
             work / 1048576.0, st ? " failed: " : "", st ? r->bk->err.msg : "");
    check(st == DIFFUSE_OK && rel <= 1e-4 && r->bk->arena_used == top, what, detail);

    work = vae_workspace_bytes(m, VAE_DECODE, B, H, W);
    if (!work || rig_buffers(r, work, lat, img, &in, &out)) {
        check(0, name, "decode arena");
        return;
    }
    for (size_t i = 0; i < lat; i++) in[i] = fx->z[i] * m->cfg.scaling_factor; /* the UNet's latents */
    poison(out, img);
    top = r->bk->arena_used;
    t0 = now_s();
    st = vae_decode(m, r->bk, in, B, h, w, out);
    rel = rel_err(out, fx->decoded, img);
    snprintf(what, sizeof what, "%s decode %dx%dx%d latents -> image", name, B, h, w);
    snprintf(detail, sizeof detail, "rel err %.3g (%.2f s, workspace %.1f MiB)%s%s", rel, now_s() - t0,
             work / 1048576.0, st ? " failed: " : "", st ? r->bk->err.msg : "");
    check(st == DIFFUSE_OK && rel <= 1e-4 && r->bk->arena_used == top, what, detail);
}

/* Tiled encode/decode vs diffusers' enable_tiling(), and how far tiling moves
 * the result from the whole-image pass (the seam error). */
static void check_tiled(const char *name, const fixture *fx, rig *r) {
    const vae_model *m = r->m;
    struct json_object *tiling = json_object_object_get(fx->meta, "tiled");
    const int tile_px = json_object_get_int(json_object_object_get(tiling, "tile_sample_min_size"));
    const int tile_lat = json_object_get_int(json_object_object_get(tiling, "tile_latent_min_size"));
    const int B = fx->batch, H = fx->height, W = fx->width, h = H / fx->factor, w = W / fx->factor;
    const size_t img = (size_t)B * 3 * H * W, lat = (size_t)B * fx->latent * h * w;
    char what[160], detail[1200];
    float *in, *out;
    /* 0 = the config's default tile, which the fixture used */
    size_t work = vae_tiled_workspace_bytes(m, VAE_ENCODE, B, H, W, 0);
    if (!work || rig_buffers(r, work, img, 2 * lat, &in, &out)) {
        check(0, name, "tiled encode arena");
        return;
    }
    memcpy(in, fx->x, img * sizeof(float));
    poison(out, 2 * lat);
    diffuse_status st = vae_encode_tiled(m, r->bk, in, B, H, W, 0, out);
    double rel = rel_err(out, fx->moments_tiled, 2 * lat);
    snprintf(what, sizeof what, "%s: encode in %d px tiles vs enable_tiling()", name, tile_px);
    snprintf(detail, sizeof detail, "rel err %.3g; seams vs whole-image encode %.3g (workspace %.1f MiB vs %.1f)%s%s",
             rel, rel_err(out, fx->moments, 2 * lat), work / 1048576.0,
             vae_workspace_bytes(m, VAE_ENCODE, B, H, W) / 1048576.0, st ? " failed: " : "", st ? r->bk->err.msg : "");
    check(st == DIFFUSE_OK && rel <= 1e-4, what, detail);

    work = vae_tiled_workspace_bytes(m, VAE_DECODE, B, H, W, tile_lat);
    if (!work || rig_buffers(r, work, lat, img, &in, &out)) {
        check(0, name, "tiled decode arena");
        return;
    }
    for (size_t i = 0; i < lat; i++) in[i] = fx->z[i] * m->cfg.scaling_factor;
    poison(out, img);
    st = vae_decode_tiled(m, r->bk, in, B, h, w, tile_lat, out);
    rel = rel_err(out, fx->decoded_tiled, img);
    snprintf(what, sizeof what, "%s: decode in %d-latent tiles vs enable_tiling()", name, tile_lat);
    snprintf(detail, sizeof detail, "rel err %.3g; seams vs whole-image decode %.3g (workspace %.1f MiB vs %.1f)%s%s",
             rel, rel_err(out, fx->decoded, img), work / 1048576.0,
             vae_workspace_bytes(m, VAE_DECODE, B, H, W) / 1048576.0, st ? " failed: " : "", st ? r->bk->err.msg : "");
    check(st == DIFFUSE_OK && rel <= 1e-4, what, detail);

    st = vae_decode_tiled(m, r->bk, in, B, h, w, 6, out);
    check(st == DIFFUSE_ERR_INVALID_ARGUMENT, "tile not a multiple of 4 refused", r->bk->err.msg);
}

static void check_fixture(const char *name) {
    fixture fx = {0};
    rig r = {0};
    if (fixture_load(name, &fx)) {
        failures++;
        return;
    }
    if (rig_open(&fx, &r) == 0) {
        check_passes(name, &fx, &r);
        if (fx.tiled) check_tiled(name, &fx, &r);
    }
    rig_close(&r);
    fixture_free(&fx);
}

/* ------------------------------------------------------------------------ */
/* Posterior, errors, a real model folder                                    */
/* ------------------------------------------------------------------------ */

/* A copy of @cfg with @key set to the JSON value @value (NULL: removed). */
static struct json_object *config_with(const struct json_object *cfg, const char *key, const char *value) {
    struct json_object *c = json_tokener_parse(json_object_to_json_string((struct json_object *)cfg));
    if (value)
        json_object_object_add(c, key, json_tokener_parse(value));
    else
        json_object_object_del(c, key);
    return c;
}

/* latents = s * (mean + exp(0.5 clamp(logvar, -30, 20)) noise - shift) on
 * values whose answer is known in closed form. */
static void check_posterior(const fixture *fx, const st_file *weights) {
    struct json_object *cfg = config_with(fx->config, "shift_factor", "0.5");
    json_object_object_add(cfg, "scaling_factor", json_object_new_double(2.0));
    vae_model *m = NULL;
    df_error err = {0};
    if (vae_load(weights, "", cfg, &m, &err) != DIFFUSE_OK) {
        check(0, "posterior: load", err.msg);
        json_object_put(cfg);
        return;
    }
    /* (1, 2L = 8, 1, 2): channels 0..3 mean, 4..7 logvar */
    const float lv[8] = {0.0f, 2.0f * logf(3.0f), -2.0f * logf(2.0f), 25.0f, -40.0f, 20.0f, -30.0f, 1.0f};
    const double std[8] = {1.0, 3.0, 0.5, exp(10.0), exp(-15.0), exp(10.0), exp(-15.0), exp(0.5)};
    float moments[16], noise[8], got[8], mode[8];
    for (int i = 0; i < 8; i++) {
        moments[i] = 0.25f * (float)i - 1.0f; /* mean */
        moments[8 + i] = lv[i];
        noise[i] = (i % 2 ? -1.0f : 1.0f) * (0.5f + 0.125f * (float)i);
    }
    diffuse_status st = vae_posterior_latents(m, moments, noise, 1, 1, 2, got, &err);
    int ok = st == DIFFUSE_OK;
    double worst = 0.0;
    for (int i = 0; ok && i < 8; i++) {
        const double want = 2.0 * (moments[i] + std[i] * noise[i] - 0.5);
        worst = fmax(worst, fabs(got[i] - want) / fmax(1.0, fabs(want)));
    }
    char detail[160];
    snprintf(detail, sizeof detail, "max rel err %.3g over clamped and unclamped logvars", worst);
    check(ok && worst <= 1e-6, "posterior sample, scaling 2 and shift 0.5", detail);
    st = vae_posterior_latents(m, moments, NULL, 1, 1, 2, mode, &err);
    ok = st == DIFFUSE_OK;
    for (int i = 0; ok && i < 8; i++) ok = mode[i] == (moments[i] - 0.5f) * 2.0f;
    check(ok, "posterior mode (noise NULL) is the scaled mean", NULL);
    st = vae_posterior_latents(m, NULL, noise, 1, 1, 2, got, &err);
    check(st == DIFFUSE_ERR_INVALID_ARGUMENT, "posterior with NULL moments refused", err.msg);
    vae_free(m);
    json_object_put(cfg);
}

/* Loads @specs (with one change applied by the caller) and expects @want
 * with @needle in the message. */
static void expect_load(const char *what, const dw_spec *specs, size_t n, const struct json_object *cfg,
                        diffuse_status want, const char *needle) {
    st_file *f = dw_build_file(specs, n);
    vae_model *m = NULL;
    df_error err = {0};
    const diffuse_status st = vae_load(f, "", cfg, &m, &err);
    check(st == want && (want == DIFFUSE_OK ? m != NULL : m == NULL) && (!needle || strstr(err.msg, needle)), what,
          st == DIFFUSE_OK ? "loaded" : err.msg);
    vae_free(m);
    dw_free_file(f);
}

static size_t spec_index(const dw_spec *s, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0) return i;
    return n;
}

static void check_load_errors(const fixture *fx) {
    size_t n;
    dw_spec *s = fixture_specs(fx, &n);
    const char *victim = "decoder.mid_block.attentions.0.to_v.bias";
    size_t k = spec_index(s, n, victim);
    dw_spec saved = s[k];
    s[k] = s[n - 1]; /* drop it */
    expect_load("missing tensor -> MODEL_MISSING_TENSOR", s, n - 1, fx->config, DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                victim);
    s[k] = saved;
    k = spec_index(s, n, "encoder.down_blocks.1.resnets.0.conv_shortcut.weight");
    s[k].shape[1] += 1;
    expect_load("wrong shape -> MODEL_SHAPE", s, n, fx->config, DIFFUSE_ERR_MODEL_SHAPE, "conv_shortcut.weight");
    s[k].shape[1] -= 1;

    static const char *const bad[][3] = {
        {"act_fn", "\"gelu\"", "act_fn"},
        {"down_block_types", "[\"DownEncoderBlock2D\", \"AttnDownEncoderBlock2D\"]", "AttnDownEncoderBlock2D"},
        {"up_block_types", "[\"UpDecoderBlock2D\"]", "up_block_types"},
        {"norm_num_groups", "24", "norm_num_groups"},
        {"block_out_channels", "\"wide\"", "block_out_channels"},
        {"latent_channels", "0", "latent_channels"},
        {"scaling_factor", "-1", "scaling_factor"},
        {"use_quant_conv", "\"yes\"", "use_quant_conv"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct json_object *cfg = config_with(fx->config, bad[i][0], bad[i][1]);
        char what[160];
        snprintf(what, sizeof what, "config %s = %s -> MODEL_CONFIG", bad[i][0], bad[i][1]);
        expect_load(what, s, n, cfg, DIFFUSE_ERR_MODEL_CONFIG, bad[i][2]);
        json_object_put(cfg);
    }
    /* Optional parts: no mid-block attention, no quant convs, no tensors for them. */
    struct json_object *cfg = config_with(fx->config, "mid_block_add_attention", "false");
    json_object_object_add(cfg, "use_quant_conv", json_object_new_boolean(0));
    json_object_object_add(cfg, "use_post_quant_conv", json_object_new_boolean(0));
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!strstr(s[i].name, "attentions") && !strstr(s[i].name, "quant_conv")) s[kept++] = s[i];
    expect_load("no mid attention, no quant convs, their tensors absent", s, kept, cfg, DIFFUSE_OK, NULL);
    json_object_put(cfg);
    free(s);
}

/* Checkpoints written by diffusers < 0.14 name the attention query, key,
 * value, proj_attn; the same weights under those names give the same moments. */
static void check_old_attention_names(const fixture *fx) {
    size_t n;
    dw_spec *s = fixture_specs(fx, &n);
    static const char *const from[4] = {"to_q.", "to_k.", "to_v.", "to_out.0."};
    static const char *const to[4] = {"query.", "key.", "value.", "proj_attn."};
    for (size_t i = 0; i < n; i++) {
        for (int j = 0; j < 4; j++) {
            char *p = strstr(s[i].name, from[j]);
            if (!p) continue;
            char rest[256];
            snprintf(rest, sizeof rest, "%s", p + strlen(from[j]));
            snprintf(p, sizeof s[i].name - (size_t)(p - s[i].name), "%s%s", to[j], rest);
        }
    }
    rig r = {0};
    r.weights = dw_build_file(s, n);
    free(s);
    df_error err = {0};
    diffuse_status st = vae_load(r.weights, "", fx->config, &r.m, &err);
    if (st == DIFFUSE_OK) st = bk_cpu_create(0, &r.bk, &err);
    if (st == DIFFUSE_OK) {
        check_passes("tiny (query/key/value/proj_attn names)", fx, &r);
    } else {
        check(0, "old attention names: load", err.msg);
    }
    rig_close(&r);
}

/* Wrong sizes and a too-small arena are statuses with messages. */
static void check_bad_calls(const fixture *fx) {
    rig r = {0};
    if (rig_open(fx, &r)) return;
    float *in, *out;
    const size_t img = 3 * 32 * 32, lat = 8 * 16 * 16;
    if (rig_buffers(&r, 0, img, lat, &in, &out) == 0) {
        for (size_t i = 0; i < img; i++) in[i] = 0.5f;
        diffuse_status st = vae_encode(r.m, r.bk, in, 1, 31, 32, out);
        check(st == DIFFUSE_ERR_INVALID_ARGUMENT && strstr(r.bk->err.msg, "multiples"),
              "encode of 31x32 (not a multiple of f) refused", r.bk->err.msg);
        st = vae_encode(r.m, r.bk, in, 1, 32, 32, out);
        check(st == DIFFUSE_ERR_OUT_OF_MEMORY, "encode with no workspace -> OUT_OF_MEMORY", r.bk->err.msg);
        st = vae_decode(r.m, r.bk, NULL, 1, 16, 16, out);
        check(st == DIFFUSE_ERR_INVALID_ARGUMENT, "decode of NULL latents refused", r.bk->err.msg);
        check(vae_workspace_bytes(r.m, VAE_DECODE, 1, 33, 32) == 0, "workspace of 33x32 (not a multiple of f) is 0",
              NULL);
    }
    rig_close(&r);
}

/* Encodes a 32x32 image, samples the posterior, decodes; shapes and
 * finiteness only (no reference for this model). */
static void run_32x32(const vae_model *m, bk_backend *bk) {
    const int f = m->cfg.scale, L = m->cfg.latent_channels, h = 32 / f, w = 32 / f;
    const size_t img = 3 * 32 * 32, lat = (size_t)L * h * w;
    size_t work = vae_workspace_bytes(m, VAE_ENCODE, 1, 32, 32);
    const size_t dec = vae_workspace_bytes(m, VAE_DECODE, 1, 32, 32);
    work = work > dec ? work : dec;
    float *x = NULL, *moments = NULL, *lat_dev = NULL, *image = NULL, noise[4096];
    diffuse_status st = lat <= 4096 ? bk->ops->arena_reserve(bk, work + (2 * img + 3 * lat) * sizeof(float) + 512)
                                    : DIFFUSE_ERR_INVALID_ARGUMENT;
    if (st == DIFFUSE_OK) {
        x = bk_alloc(bk, img * sizeof(float));
        moments = bk_alloc(bk, 2 * lat * sizeof(float));
        lat_dev = bk_alloc(bk, lat * sizeof(float));
        image = bk_alloc(bk, img * sizeof(float));
        if (!image) st = bk->err.status;
    }
    const double t0 = now_s();
    if (st == DIFFUSE_OK) {
        uint32_t seed = 12345;
        for (size_t i = 0; i < img; i++) x[i] = lcg_uniform(&seed);
        for (size_t i = 0; i < lat; i++) noise[i] = lcg_uniform(&seed);
        poison(moments, 2 * lat);
        poison(image, img);
        st = vae_encode(m, bk, x, 1, 32, 32, moments);
    }
    if (st == DIFFUSE_OK) st = vae_posterior_latents(m, moments, noise, 1, h, w, lat_dev, &bk->err);
    if (st == DIFFUSE_OK) st = vae_decode(m, bk, lat_dev, 1, h, w, image);
    int finite = st == DIFFUSE_OK;
    for (size_t i = 0; finite && i < 2 * lat; i++) finite = isfinite(moments[i]);
    for (size_t i = 0; finite && i < img; i++) finite = isfinite(image[i]);
    char detail[1200];
    snprintf(detail, sizeof detail, "moments (1, %d, %d, %d), image (1, 3, 32, 32), %.2f s%s%s", 2 * L, h, w,
             now_s() - t0, st ? " failed: " : "", st ? bk->err.msg : "");
    check(finite, "tiny-sd1 vae: encode, sample, decode 32x32, all finite", detail);
}

/* tiny-sd1's vae/ through df_model_load, as the pipeline will load it. */
static void check_model_folder(void) {
    char path[4096];
    const char *dir = getenv("DIFFUSE_FIXTURES");
    snprintf(path, sizeof path, "%s/models/tiny-sd1", dir ? dir : "tests/fixtures");
    diffuse_model *model = NULL;
    vae_model *m = NULL;
    bk_backend *bk = NULL;
    df_error err = {0};
    diffuse_status st = df_model_load(path, NULL, &model, &err);
    if (st == DIFFUSE_OK) {
        const df_model_component *comp = &model->comp[DF_COMP_VAE];
        st = vae_load(comp->weights, comp->key_prefix, comp->config, &m, &err);
    }
    if (st == DIFFUSE_OK) st = bk_cpu_create(0, &bk, &err);
    if (st == DIFFUSE_OK)
        run_32x32(m, bk);
    else
        check(0, "tiny-sd1 vae: load", err.msg);
    if (bk) bk->ops->destroy(bk);
    vae_free(m);
    df_model_free(model);
}

int main(void) {
    const double t0 = now_s();
    check_fixture("tiny");
    check_fixture("tiny_odd");
    check_fixture("sd");
    check_fixture("tiled");
    fixture fx = {0};
    if (fixture_load("tiny", &fx) == 0) {
        size_t n;
        dw_spec *specs = fixture_specs(&fx, &n);
        st_file *weights = dw_build_file(specs, n);
        free(specs);
        check_posterior(&fx, weights);
        check_load_errors(&fx);
        check_old_attention_names(&fx);
        check_bad_calls(&fx);
        dw_free_file(weights);
    } else {
        failures++;
    }
    fixture_free(&fx);
    check_model_folder();
    printf("vae: %s (%.1f s)\n", failures ? "FAILED" : "all checks passed", now_s() - t0);
    return failures ? 1 : 0;
}
