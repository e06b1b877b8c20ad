/*
 * test_clip_text.c - the CLIP text encoder against transformers'
 * CLIPTextModel (fixtures from scripts/make_text_encoder_fixtures.py): the
 * tiny config diffusers' tests use, an SD1.5-shaped and an SD2-shaped
 * encoder, each at several clip_skip values, max relative error <= 1e-4.
 * Weights are rebuilt from the detweights formula.
 */
#include "backend.h"
#include "detweights.h"
#include "text/clip_text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

typedef struct fixture {
    struct json_object *meta;
    int batch, seq, n_skips, hidden;
    int32_t *ids;  /* (B, S) */
    float *ref;    /* (K, B, S, C) */
} fixture;

static int read_line(FILE *f, char *buf, size_t cap) {
    if (!fgets(buf, (int)cap, f)) return 1;
    size_t n = strlen(buf);
    if (n == 0 || buf[n - 1] != '\n') return 1;
    buf[n - 1] = '\0';
    return 0;
}

static int fixture_load(const char *name, fixture *fx) {
    char path[4096], line[8192];
    const char *dir = getenv("DIFFUSE_FIXTURES");
    snprintf(path, sizeof path, "%s/text_encoder/%s.bin", dir ? dir : "tests/fixtures", name);
    FILE *f = fopen(path, "rb");
    if (!f) return printf("FAIL cannot open %s\n", path), 1;
    int bad = read_line(f, line, sizeof line) || strcmp(line, "DIFFUSE-FIXTURE text_encoder 1") != 0;
    bad = bad || read_line(f, line, sizeof line) || !(fx->meta = json_tokener_parse(line));
    if (!bad) {
        struct json_object *cfg = json_object_object_get(fx->meta, "config");
        fx->batch = json_object_get_int(json_object_object_get(fx->meta, "batch"));
        fx->seq = json_object_get_int(json_object_object_get(fx->meta, "seq"));
        fx->n_skips = (int)json_object_array_length(json_object_object_get(fx->meta, "clip_skips"));
        fx->hidden = json_object_get_int(json_object_object_get(cfg, "hidden_size"));
        size_t n_ids = (size_t)fx->batch * fx->seq, n_ref = (size_t)fx->n_skips * n_ids * fx->hidden;
        fx->ids = malloc(n_ids * sizeof *fx->ids);
        fx->ref = malloc(n_ref * sizeof *fx->ref);
        bad = fread(fx->ids, sizeof *fx->ids, n_ids, f) != n_ids || fread(fx->ref, sizeof *fx->ref, n_ref, f) != n_ref;
    }
    fclose(f);
    if (bad) printf("FAIL malformed fixture %s\n", path);
    return bad;
}

static void fixture_free(fixture *fx) {
    json_object_put(fx->meta);
    free(fx->ids);
    free(fx->ref);
}

/* The tensor list of a CLIPTextModel, named "<prefix><transformers 5 name>",
 * with values hashed from the unprefixed name (as the fixture script did). */
static dw_spec *clip_specs(const struct json_object *cfg, const char *prefix, size_t *n) {
    const int C = json_object_get_int(json_object_object_get(cfg, "hidden_size"));
    const int I = json_object_get_int(json_object_object_get(cfg, "intermediate_size"));
    const int L = json_object_get_int(json_object_object_get(cfg, "num_hidden_layers"));
    const int V = json_object_get_int(json_object_object_get(cfg, "vocab_size"));
    const int P = json_object_get_int(json_object_object_get(cfg, "max_position_embeddings"));
    dw_spec *s = calloc((size_t)16 * L + 4, sizeof *s);
    size_t k = 0;
#define ADD(nd, d0, d1, ...)                                                      \
    do {                                                                          \
        snprintf(s[k].value_name, sizeof s[k].value_name, __VA_ARGS__);           \
        snprintf(s[k].name, sizeof s[k].name, "%s%s", prefix, s[k].value_name);  \
        s[k].ndim = nd;                                                           \
        s[k].shape[0] = d0;                                                       \
        s[k].shape[1] = d1;                                                       \
        k++;                                                                      \
    } while (0)
    ADD(2, V, C, "embeddings.token_embedding.weight");
    ADD(2, P, C, "embeddings.position_embedding.weight");
    ADD(1, C, 0, "final_layer_norm.weight");
    ADD(1, C, 0, "final_layer_norm.bias");
    static const char *proj[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < 4; p++) {
            ADD(2, C, C, "encoder.layers.%d.self_attn.%s.weight", l, proj[p]);
            ADD(1, C, 0, "encoder.layers.%d.self_attn.%s.bias", l, proj[p]);
        }
        for (int n = 1; n <= 2; n++) {
            ADD(1, C, 0, "encoder.layers.%d.layer_norm%d.weight", l, n);
            ADD(1, C, 0, "encoder.layers.%d.layer_norm%d.bias", l, n);
        }
        ADD(2, I, C, "encoder.layers.%d.mlp.fc1.weight", l);
        ADD(1, I, 0, "encoder.layers.%d.mlp.fc1.bias", l);
        ADD(2, C, I, "encoder.layers.%d.mlp.fc2.weight", l);
        ADD(1, C, 0, "encoder.layers.%d.mlp.fc2.bias", l);
    }
#undef ADD
    *n = k;
    return s;
}

/* Runs the encoder for every clip_skip of the fixture and compares. */
static void check_fixture(const char *name, const char *file_prefix, const char *load_prefix) {
    fixture fx = {0};
    if (fixture_load(name, &fx)) {
        failures++;
        return;
    }
    struct json_object *cfg = json_object_object_get(fx.meta, "config");
    size_t n_specs;
    dw_spec *specs = clip_specs(cfg, file_prefix, &n_specs);
    st_file *weights = dw_build_file(specs, n_specs);
    free(specs);

    df_error err = {0};
    clip_text_model *m = NULL;
    bk_backend *bk = NULL;
    diffuse_status st = clip_text_load(weights, load_prefix, cfg, &m, &err);
    if (st == DIFFUSE_OK) st = bk_cpu_create(0, &bk, &err);
    const size_t out_floats = (size_t)fx.batch * fx.seq * fx.hidden;
    if (st == DIFFUSE_OK)
        st = bk->ops->arena_reserve(bk, clip_text_workspace_bytes(&m->cfg, fx.batch, fx.seq) +
                                            out_floats * sizeof(float) + 64);
    float *out = st == DIFFUSE_OK ? bk_alloc(bk, out_floats * sizeof(float)) : NULL;
    if (st != DIFFUSE_OK || !out) {
        printf("FAIL %s (%s): setup: %s\n", name, file_prefix, bk && !out ? bk->err.msg : err.msg);
        failures++;
    }
    struct json_object *skips = json_object_object_get(fx.meta, "clip_skips");
    for (int k = 0; out && k < fx.n_skips; k++) {
        const int skip = json_object_get_int(json_object_array_get_idx(skips, (size_t)k));
        for (size_t i = 0; i < out_floats; i++) out[i] = NAN;
        st = clip_text_forward(m, bk, fx.ids, fx.batch, fx.seq, skip, out);
        const float *ref = fx.ref + (size_t)k * out_floats;
        double max_err = 0.0, max_ref = 0.0;
        for (size_t i = 0; i < out_floats; i++) {
            double e = fabs((double)out[i] - ref[i]);
            if (!(e <= max_err)) max_err = e; /* NaN propagates */
            if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
        }
        const double rel = max_err / max_ref;
        const int ok = st == DIFFUSE_OK && rel <= 1e-4;
        printf("%s text encoder %-5s keys \"%s\" clip_skip %d: rel err %.3g%s%s\n", ok ? "PASS" : "FAIL", name,
               file_prefix, skip, rel, st == DIFFUSE_OK ? "" : " forward failed: ", st == DIFFUSE_OK ? "" : bk->err.msg);
        failures += !ok;
    }
    if (bk) bk->ops->destroy(bk);
    clip_text_free(m);
    dw_free_file(weights);
    fixture_free(&fx);
}

/* Bad arguments and bad weights are statuses with messages. */
static void check_errors(void) {
    fixture fx = {0};
    if (fixture_load("tiny", &fx)) {
        failures++;
        return;
    }
    struct json_object *cfg = json_object_object_get(fx.meta, "config");
    size_t n_specs;
    dw_spec *specs = clip_specs(cfg, "", &n_specs);
    specs[n_specs - 1].shape[0] += 1; /* last layer's fc2.bias: wrong shape */
    st_file *bad_shape = dw_build_file(specs, n_specs);
    st_file *missing = dw_build_file(specs, n_specs - 1);
    free(specs);
    df_error err = {0};
    clip_text_model *m = NULL;
    diffuse_status st = clip_text_load(bad_shape, "", cfg, &m, &err);
    int ok = st == DIFFUSE_OK ? 0 : st == DIFFUSE_ERR_MODEL_SHAPE && strstr(err.msg, "fc2.bias") && !m;
    printf("%s wrong-shaped weight: %s\n", ok ? "PASS" : "FAIL", err.msg);
    failures += !ok;
    st = clip_text_load(missing, "", cfg, &m, &err);
    ok = st == DIFFUSE_ERR_MODEL_MISSING_TENSOR && strstr(err.msg, "fc2.bias") && !m;
    printf("%s missing weight: %s\n", ok ? "PASS" : "FAIL", err.msg);
    failures += !ok;
    struct json_object *bad_cfg = json_tokener_parse("{\"hidden_size\": 32, \"intermediate_size\": \"x\"}");
    st = clip_text_load(missing, "", bad_cfg, &m, &err);
    ok = st == DIFFUSE_ERR_MODEL_CONFIG && strstr(err.msg, "intermediate_size");
    printf("%s bad config: %s\n", ok ? "PASS" : "FAIL", err.msg);
    failures += !ok;
    json_object_put(bad_cfg);
    dw_free_file(bad_shape);
    dw_free_file(missing);
    fixture_free(&fx);
}

int main(void) {
    check_fixture("tiny", "", "");
    check_fixture("tiny", "text_model.", "");                                  /* released checkpoints' names */
    check_fixture("tiny", "cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.");
    check_fixture("sd15", "", "");
    check_fixture("sd2", "", "");
    check_errors();
    printf("%s\n", failures ? "text encoder: FAILED" : "text encoder: all checks passed");
    return failures ? 1 : 0;
}
