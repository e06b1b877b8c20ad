/*
 * test_unet.c - the UNet against diffusers' UNet2DConditionModel (fixtures
 * from scripts/make_unet_fixtures.py): the tiny test config at 32x32 and at
 * sizes that are not multiples of 2, a 3-level variant (per-level heads,
 * linear projections, 2 transformer layers), a 9-channel inpainting UNet,
 * SD 1.5- and SD 2-shaped UNets, and the committed tiny-sd1 model folder
 * loaded through df_model_load. Max relative error <= 1e-4 on outputs
 * poisoned with NaN first; the arena is sized by unet_workspace_bytes.
 * Detweights fixtures are rebuilt from the tensor list they carry. Then
 * bad weights, bad configs and bad arguments, each with its status.
 */
#include "backend.h"
#include "detweights.h"
#include "model/model.h"
#include "nets/unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

#define MAX_RUNS 4

typedef struct fx_run {
    int batch, h, w, seq;
    float ts[16];         /* (B) */
    float *sample, *text; /* (B, Cin, h, w), (B, S, Dc) */
    float *ref;           /* (B, Cout, h, w) */
} fx_run;

typedef struct fixture {
    struct json_object *meta;
    struct json_object *config; /* inside meta */
    int cin, cout, cross, n_runs;
    fx_run run[MAX_RUNS];
} fixture;

static const char *fixture_dir(void) {
    const char *dir = getenv("DIFFUSE_FIXTURES");
    return dir ? dir : "tests/fixtures";
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int json_int(struct json_object *o, const char *key) {
    return json_object_get_int(json_object_object_get(o, key));
}

static float *read_floats(FILE *f, size_t n) {
    float *p = malloc(n * sizeof *p);
    if (p && fread(p, sizeof *p, n, f) != n) {
        free(p);
        p = NULL;
    }
    return p;
}

static int fixture_read_runs(FILE *f, fixture *fx) {
    struct json_object *runs = json_object_object_get(fx->meta, "runs");
    fx->n_runs = (int)json_object_array_length(runs);
    if (fx->n_runs > MAX_RUNS) return 1;
    for (int r = 0; r < fx->n_runs; r++) {
        struct json_object *o = json_object_array_get_idx(runs, (size_t)r);
        fx_run *run = &fx->run[r];
        run->batch = json_int(o, "batch");
        run->h = json_int(o, "height");
        run->w = json_int(o, "width");
        run->seq = json_int(o, "seq");
        struct json_object *ts = json_object_object_get(o, "timesteps");
        if (run->batch > 16 || (int)json_object_array_length(ts) != run->batch) return 1;
        for (int b = 0; b < run->batch; b++)
            run->ts[b] = (float)json_object_get_double(json_object_array_get_idx(ts, (size_t)b));
        const size_t hw = (size_t)run->h * run->w;
        run->sample = read_floats(f, (size_t)run->batch * fx->cin * hw);
        run->text = read_floats(f, (size_t)run->batch * run->seq * fx->cross);
        run->ref = read_floats(f, (size_t)run->batch * fx->cout * hw);
        if (!run->sample || !run->text || !run->ref) return 1;
    }
    return 0;
}

static int fixture_load(const char *name, fixture *fx) {
    char path[4096];
    snprintf(path, sizeof path, "%s/unet/%s.bin", fixture_dir(), name);
    FILE *f = fopen(path, "rb");
    if (!f) return printf("FAIL cannot open %s\n", path), 1;
    char *line = NULL;
    size_t cap = 0;
    int bad = getline(&line, &cap, f) <= 0 || strcmp(line, "DIFFUSE-FIXTURE unet 1\n") != 0;
    bad = bad || getline(&line, &cap, f) <= 0 || !(fx->meta = json_tokener_parse(line));
    free(line);
    if (!bad) {
        fx->config = json_object_object_get(fx->meta, "config");
        fx->cin = json_int(fx->config, "in_channels");
        fx->cout = json_int(fx->config, "out_channels");
        fx->cross = json_int(fx->config, "cross_attention_dim");
        bad = fixture_read_runs(f, fx);
    }
    fclose(f);
    if (bad) printf("FAIL malformed fixture %s\n", path);
    return bad;
}

static void fixture_free(fixture *fx) {
    for (int r = 0; r < MAX_RUNS; r++) {
        free(fx->run[r].sample);
        free(fx->run[r].text);
        free(fx->run[r].ref);
    }
    json_object_put(fx->meta);
}

/* The detweights tensor list of a fixture ([[name, shape], ...]). */
static dw_spec *fixture_specs(const fixture *fx, size_t *n) {
    struct json_object *list = json_object_object_get(fx->meta, "tensors");
    *n = json_object_array_length(list);
    dw_spec *s = calloc(*n, sizeof *s);
    for (size_t i = 0; i < *n; i++) {
        struct json_object *e = json_object_array_get_idx(list, i);
        struct json_object *shape = json_object_array_get_idx(e, 1);
        snprintf(s[i].name, sizeof s[i].name, "%s", json_object_get_string(json_object_array_get_idx(e, 0)));
        strcpy(s[i].value_name, s[i].name);
        s[i].ndim = (int)json_object_array_length(shape);
        for (int d = 0; d < s[i].ndim && d < 4; d++)
            s[i].shape[d] = json_object_get_int64(json_object_array_get_idx(shape, (size_t)d));
    }
    return s;
}

/* ------------------------------------------------------------------------ */
/* Reference comparisons                                                     */
/* ------------------------------------------------------------------------ */

/* Runs one fixture run with an arena of exactly io + unet_workspace_bytes. */
static void check_run(const char *name, const unet_model *m, const fixture *fx, const fx_run *run) {
    bk_backend *bk = NULL;
    df_error err = {0};
    const size_t hw = (size_t)run->h * run->w;
    const size_t n_in = (size_t)run->batch * fx->cin * hw, n_text = (size_t)run->batch * run->seq * fx->cross;
    const size_t n_out = (size_t)run->batch * fx->cout * hw;
    const size_t ws = unet_workspace_bytes(m, run->batch, run->h, run->w, run->seq);
    const size_t io = (n_in + n_text + n_out) * sizeof(float) + 3 * 64;
    diffuse_status st = bk_cpu_create(0, &bk, &err);
    if (st == DIFFUSE_OK) st = bk->ops->arena_reserve(bk, io + ws);
    float *in = st == DIFFUSE_OK ? bk_alloc(bk, n_in * sizeof(float)) : NULL;
    float *text = in ? bk_alloc(bk, n_text * sizeof(float)) : NULL;
    float *out = text ? bk_alloc(bk, n_out * sizeof(float)) : NULL;
    if (!out || ws == 0) {
        printf("FAIL unet %s: setup (workspace %zu): %s\n", name, ws, bk ? bk->err.msg : err.msg);
        failures++;
        if (bk) bk->ops->destroy(bk);
        return;
    }
    memcpy(in, run->sample, n_in * sizeof(float));
    memcpy(text, run->text, n_text * sizeof(float));
    for (size_t i = 0; i < n_out; i++) out[i] = NAN;
    const size_t base = bk->arena_used;
    const double t0 = now_s();
    st = unet_forward(m, bk, in, run->batch, run->h, run->w, run->ts, text, run->seq, out);
    const double secs = now_s() - t0;
    double max_err = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n_out; i++) {
        const double e = fabs((double)out[i] - run->ref[i]);
        if (!(e <= max_err)) max_err = e; /* NaN propagates */
        if (fabs(run->ref[i]) > max_ref) max_ref = fabs(run->ref[i]);
    }
    const double rel = max_err / max_ref;
    const int ok = st == DIFFUSE_OK && rel <= 1e-4 && bk->arena_used == base;
    printf("%s unet %-15s B=%d %2dx%-2d S=%-2d: rel err %.3g (max|ref| %.3g), %.2f s, arena peak %.1f of %.1f MiB%s%s\n",
           ok ? "PASS" : "FAIL", name, run->batch, run->h, run->w, run->seq, rel, max_ref, secs,
           (double)(bk->arena_peak - base) / 1048576.0, (double)ws / 1048576.0, st == DIFFUSE_OK ? "" : ": ",
           st == DIFFUSE_OK ? "" : bk->err.msg);
    failures += !ok;
    bk->ops->destroy(bk);
}

static void check_model(const char *name, const unet_model *m, const fixture *fx) {
    for (int r = 0; r < fx->n_runs; r++) check_run(name, m, fx, &fx->run[r]);
}

/* A fixture with detweights weights. */
static void check_detweights(const char *name) {
    fixture fx = {0};
    if (fixture_load(name, &fx)) {
        failures++;
        return;
    }
    const double t0 = now_s();
    size_t n;
    dw_spec *specs = fixture_specs(&fx, &n);
    st_file *f = dw_build_file(specs, n);
    free(specs);
    const double t_weights = now_s() - t0;
    df_error err = {0};
    unet_model *m = NULL;
    diffuse_status st = unet_load(f, "", fx.config, &m, &err);
    if (st != DIFFUSE_OK) {
        printf("FAIL unet %s: load: %s\n", name, err.msg);
        failures++;
    } else {
        const int ss = m->cfg.sample_size[0];
        const size_t ws = unet_workspace_bytes(m, 2, ss, ss, 77);
        printf("     unet %s: %zu tensors rebuilt in %.2f s; arena for a CFG pair at its native %dx%d: "
               "%.1f MiB (%.1f MiB activations)\n", name, n, t_weights, ss, ss, (double)ws / 1048576.0,
               (double)(ws - BK_OP_SCRATCH_BYTES) / 1048576.0);
        check_model(name, m, &fx);
    }
    unet_free(m);
    dw_free_file(f);
    fixture_free(&fx);
}

/* The committed tiny-sd1 folder (F16 weights) through the model loader. */
static void check_model_folder(void) {
    fixture fx = {0};
    if (fixture_load("tiny-sd1-folder", &fx)) {
        failures++;
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", fixture_dir(),
             json_object_get_string(json_object_object_get(fx.meta, "model_dir")));
    *strrchr(path, '/') = '\0'; /* ".../models/tiny-sd1/unet" -> the model folder */
    df_error err = {0};
    diffuse_model *model = NULL;
    unet_model *m = NULL;
    diffuse_status st = df_model_load(path, NULL, &model, &err);
    if (st == DIFFUSE_OK) {
        const df_model_component *u = &model->comp[DF_COMP_UNET];
        st = unet_load(u->weights, u->key_prefix, u->config, &m, &err);
    }
    if (st != DIFFUSE_OK) {
        printf("FAIL unet tiny-sd1 folder %s: %s\n", path, err.msg);
        failures++;
    } else {
        check_model("tiny-sd1-folder", m, &fx);
    }
    unet_free(m);
    df_model_free(model);
    fixture_free(&fx);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static void expect(const char *what, diffuse_status got, diffuse_status want, const char *msg, const char *needle) {
    const int ok = got == want && (!needle || strstr(msg, needle));
    printf("%s %s: %s (%s)\n", ok ? "PASS" : "FAIL", what, diffuse_status_string(got), msg);
    failures += !ok;
}

/* Loads @cfg_text over the tiny weights @f. */
static diffuse_status load_with(const st_file *f, const char *cfg_text, df_error *err) {
    struct json_object *cfg = json_tokener_parse(cfg_text);
    unet_model *m = NULL;
    diffuse_status st = unet_load(f, "", cfg, &m, err);
    if (st != DIFFUSE_OK && m) {
        printf("FAIL unet_load returned a model with status %d\n", (int)st);
        failures++;
    }
    unet_free(m);
    json_object_put(cfg);
    return st;
}

/* The tiny config with @key set to the JSON value @value. */
static char *tiny_config_with(const fixture *fx, const char *key, const char *value) {
    struct json_object *c = json_tokener_parse(json_object_to_json_string(fx->config));
    json_object_object_add(c, key, value ? json_tokener_parse(value) : NULL);
    char *s = strdup(json_object_to_json_string(c));
    json_object_put(c);
    return s;
}

static void check_config_errors(const fixture *fx, const st_file *f) {
    static const struct { const char *key, *value; diffuse_status want; } cases[] = {
        {"block_out_channels", "\"x\"", DIFFUSE_ERR_MODEL_CONFIG},
        {"up_block_types", "[\"UpBlock2D\"]", DIFFUSE_ERR_MODEL_CONFIG},
        {"norm_num_groups", "5", DIFFUSE_ERR_MODEL_CONFIG},
        {"layers_per_block", "[2, 2, 2]", DIFFUSE_ERR_MODEL_CONFIG},
        {"use_linear_projection", "\"yes\"", DIFFUSE_ERR_MODEL_CONFIG},
        {"resnet_time_scale_shift", "\"scale_shift\"", DIFFUSE_ERR_UNSUPPORTED},
        {"class_embed_type", "\"timestep\"", DIFFUSE_ERR_UNSUPPORTED},
        {"down_block_types", "[\"CrossAttnDownBlock2D\", \"AttnDownBlock2D\"]", DIFFUSE_ERR_UNSUPPORTED},
        {"mid_block_type", "\"UNetMidBlock2DSimpleCrossAttn\"", DIFFUSE_ERR_UNSUPPORTED},
        {"only_cross_attention", "true", DIFFUSE_ERR_UNSUPPORTED},
        {"time_embedding_type", "\"fourier\"", DIFFUSE_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *cfg = tiny_config_with(fx, cases[i].key, cases[i].value);
        df_error err = {0};
        char what[128];
        snprintf(what, sizeof what, "config %s = %s", cases[i].key, cases[i].value);
        expect(what, load_with(f, cfg, &err), cases[i].want, err.msg, cases[i].key);
        free(cfg);
    }
}

static void check_weight_errors(const fixture *fx) {
    size_t n;
    dw_spec *specs = fixture_specs(fx, &n);
    const char *victim = "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight";
    size_t k = 0;
    while (k < n && strcmp(specs[k].name, victim) != 0) k++;
    if (k == n) {
        printf("FAIL fixture lacks %s\n", victim);
        failures++;
        free(specs);
        return;
    }
    dw_spec saved = specs[k];
    specs[k] = specs[n - 1];
    st_file *missing = dw_build_file(specs, n - 1);
    specs[k] = saved;
    specs[k].shape[1] += 1;
    st_file *bad_shape = dw_build_file(specs, n);
    free(specs);
    const char *cfg = json_object_to_json_string(fx->config);
    df_error err = {0};
    expect("missing tensor", load_with(missing, cfg, &err), DIFFUSE_ERR_MODEL_MISSING_TENSOR, err.msg, victim);
    expect("wrong shape", load_with(bad_shape, cfg, &err), DIFFUSE_ERR_MODEL_SHAPE, err.msg, "expected [32, 32]");
    dw_free_file(missing);
    dw_free_file(bad_shape);
}

/* Bad sizes, NULL buffers and a too-small arena are statuses, not crashes. */
static void check_forward_errors(const unet_model *m, const fixture *fx) {
    const fx_run *run = &fx->run[0];
    bk_backend *bk = NULL;
    df_error err = {0};
    if (bk_cpu_create(0, &bk, &err) != DIFFUSE_OK) {
        printf("FAIL backend: %s\n", err.msg);
        failures++;
        return;
    }
    const size_t ws = unet_workspace_bytes(m, run->batch, run->h, run->w, run->seq);
    const size_t n_in = (size_t)run->batch * fx->cin * run->h * run->w;
    const size_t n_text = (size_t)run->batch * run->seq * fx->cross;
    bk->ops->arena_reserve(bk, (2 * n_in + n_text) * sizeof(float) + 256 + (ws - BK_OP_SCRATCH_BYTES) / 4);
    float *in = bk_alloc(bk, n_in * sizeof(float)), *out = bk_alloc(bk, n_in * sizeof(float));
    float *text = bk_alloc(bk, n_text * sizeof(float));
    memcpy(in, run->sample, n_in * sizeof(float));
    memcpy(text, run->text, n_text * sizeof(float));
    const size_t base = bk->arena_used;
    diffuse_status st = unet_forward(m, bk, in, 0, run->h, run->w, run->ts, text, run->seq, out);
    expect("forward batch 0", st, DIFFUSE_ERR_INVALID_ARGUMENT, bk->err.msg, "batch 0");
    st = unet_forward(m, bk, in, run->batch, run->h, run->w, run->ts, NULL, run->seq, out);
    expect("forward NULL text", st, DIFFUSE_ERR_INVALID_ARGUMENT, bk->err.msg, "text");
    expect("workspace of a 0x0 latent", ws && !unet_workspace_bytes(m, 1, 0, 0, 1) ? DIFFUSE_OK : DIFFUSE_ERR_INTERNAL,
           DIFFUSE_OK, "0 bytes", NULL);
    st = unet_forward(m, bk, in, run->batch, run->h, run->w, run->ts, text, run->seq, out);
    expect("forward in a quarter of the activations' workspace", st, DIFFUSE_ERR_OUT_OF_MEMORY, bk->err.msg, "arena");
    expect("arena released after a failed pass", bk->arena_used == base ? DIFFUSE_OK : DIFFUSE_ERR_INTERNAL,
           DIFFUSE_OK, "arena top unchanged", NULL);
    bk->ops->destroy(bk);
}

static void check_errors(void) {
    fixture fx = {0};
    if (fixture_load("tiny", &fx)) {
        failures++;
        return;
    }
    size_t n;
    dw_spec *specs = fixture_specs(&fx, &n);
    st_file *f = dw_build_file(specs, n);
    free(specs);
    check_config_errors(&fx, f);
    check_weight_errors(&fx);
    unet_model *m = NULL;
    df_error err = {0};
    if (unet_load(f, "", fx.config, &m, &err) == DIFFUSE_OK) check_forward_errors(m, &fx);
    unet_free(m);
    dw_free_file(f);
    fixture_free(&fx);
}

/* Optional arguments pick cases by name (tiny, tiny3, inpaint, folder, errors, sd15, sd2). */
static int wanted(int argc, char **argv, const char *name) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return argc <= 1;
}

int main(int argc, char **argv) {
    const double t0 = now_s();
    static const char *const det[] = {"tiny", "tiny3", "inpaint"};
    for (int i = 0; i < 3; i++)
        if (wanted(argc, argv, det[i])) check_detweights(det[i]);
    if (wanted(argc, argv, "folder")) check_model_folder();
    if (wanted(argc, argv, "errors")) check_errors();
    if (wanted(argc, argv, "sd15")) check_detweights("sd15");
    if (wanted(argc, argv, "sd2")) check_detweights("sd2");
    printf("%s (%.1f s)\n", failures ? "unet: FAILED" : "unet: all checks passed", now_s() - t0);
    return failures ? 1 : 0;
}
