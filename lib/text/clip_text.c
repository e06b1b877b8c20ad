/*
 * clip_text.c - CLIPTextModel forward on the backend ops: token + position
 * embeddings, L pre-LN transformer layers with causal self-attention and an
 * MLP (quick_gelu or gelu), final layer norm. clip_skip stops early, as
 * diffusers' encode_prompt takes hidden_states[-(clip_skip + 1)].
 */
#include "text/clip_text.h"

#include "model/json_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

static diffuse_status clip_read_config(const struct json_object *j, clip_text_config *c, df_error *err) {
    static const char file[] = "text_encoder/config.json";
    int64_t v[6];
    const char *keys[6] = {"hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                           "max_position_embeddings", "vocab_size"};
    const int64_t max[6] = {65536, 1 << 20, 1024, 1024, 1 << 16, 1 << 24};
    for (int i = 0; i < 6; i++) {
        diffuse_status st = dfj_get_int(j, keys[i], file, 1, max[i], &v[i], err);
        if (st != DIFFUSE_OK) return st;
    }
    c->hidden = (int)v[0];
    c->intermediate = (int)v[1];
    c->heads = (int)v[2];
    c->layers = (int)v[3];
    c->max_positions = (int)v[4];
    c->vocab = (int)v[5];
    if (c->hidden % c->heads)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                       file, c->hidden, c->heads);
    const char *act = dfj_get_str_opt(j, "hidden_act");
    if (!act || strcmp(act, "quick_gelu") == 0)
        c->act = CLIP_ACT_QUICK_GELU; /* CLIPTextConfig's default */
    else if (strcmp(act, "gelu") == 0)
        c->act = CLIP_ACT_GELU;
    else
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: hidden_act \"%s\" is not supported (quick_gelu, gelu)",
                       file, act);
    struct json_object *eps = NULL;
    c->ln_eps = 1e-5f;
    if (json_object_object_get_ex(j, "layer_norm_eps", &eps) && eps) {
        if (!json_object_is_type(eps, json_type_double) && !json_object_is_type(eps, json_type_int))
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: layer_norm_eps must be a number, found %s", file,
                           dfj_type_name(eps));
        c->ln_eps = (float)json_object_get_double(eps);
    }
    return DIFFUSE_OK;
}

/* Finds "<prefix><name>" with exactly the shape (d0[, d1]) and a float view. */
static diffuse_status clip_weight(const st_file *f, const char *prefix, const char *name, int64_t d0, int64_t d1,
                                  const float **out, df_error *err) {
    char key[512];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    const st_tensor *t = st_find(f, key);
    if (!t || !t->f32)
        return df_fail(err, DIFFUSE_ERR_MODEL_MISSING_TENSOR, "%s: text encoder tensor %s is %s", f->path, key,
                       t ? "not a float tensor" : "missing");
    int want_ndim = d1 ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
        char got[128];
        if (d1)
            return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor %s has shape %s, expected [%lld, %lld]", f->path,
                           key, st_shape_str(t->shape, t->ndim, got, sizeof got), (long long)d0, (long long)d1);
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor %s has shape %s, expected [%lld]", f->path, key,
                       st_shape_str(t->shape, t->ndim, got, sizeof got), (long long)d0);
    }
    *out = t->f32;
    return DIFFUSE_OK;
}

static diffuse_status clip_load_layer(const st_file *f, const char *prefix, const clip_text_config *c, int l,
                                      clip_layer_weights *w, df_error *err) {
    const int64_t C = c->hidden, I = c->intermediate;
    struct { const char *name; int64_t d0, d1; const float **dst; } spec[] = {
        {"layer_norm1.weight", C, 0, &w->ln1_w},    {"layer_norm1.bias", C, 0, &w->ln1_b},
        {"self_attn.q_proj.weight", C, C, &w->q_w}, {"self_attn.q_proj.bias", C, 0, &w->q_b},
        {"self_attn.k_proj.weight", C, C, &w->k_w}, {"self_attn.k_proj.bias", C, 0, &w->k_b},
        {"self_attn.v_proj.weight", C, C, &w->v_w}, {"self_attn.v_proj.bias", C, 0, &w->v_b},
        {"self_attn.out_proj.weight", C, C, &w->o_w}, {"self_attn.out_proj.bias", C, 0, &w->o_b},
        {"layer_norm2.weight", C, 0, &w->ln2_w},    {"layer_norm2.bias", C, 0, &w->ln2_b},
        {"mlp.fc1.weight", I, C, &w->fc1_w},        {"mlp.fc1.bias", I, 0, &w->fc1_b},
        {"mlp.fc2.weight", C, I, &w->fc2_w},        {"mlp.fc2.bias", C, 0, &w->fc2_b},
    };
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
        char name[256];
        snprintf(name, sizeof name, "encoder.layers.%d.%s", l, spec[i].name);
        diffuse_status st = clip_weight(f, prefix, name, spec[i].d0, spec[i].d1, spec[i].dst, err);
        if (st != DIFFUSE_OK) return st;
    }
    return DIFFUSE_OK;
}

diffuse_status clip_text_load(const st_file *f, const char *prefix, const struct json_object *config,
                              clip_text_model **out, df_error *err) {
    *out = NULL;
    if (!f || !config) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "clip_text_load: no weights or config");
    if (!prefix) prefix = "";
    char probe[256], full[256];
    snprintf(probe, sizeof probe, "%stext_model.embeddings.token_embedding.weight", prefix);
    snprintf(full, sizeof full, "%s%s", prefix, st_find(f, probe) ? "text_model." : "");
    prefix = full;
    clip_text_model *m = calloc(1, sizeof *m);
    if (!m) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "clip_text_load: out of memory");
    diffuse_status st = clip_read_config(config, &m->cfg, err);
    const clip_text_config *c = &m->cfg;
    if (st == DIFFUSE_OK && !(m->layer = calloc((size_t)c->layers, sizeof *m->layer)))
        st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "clip_text_load: out of memory");
    if (st == DIFFUSE_OK)
        st = clip_weight(f, prefix, "embeddings.token_embedding.weight", c->vocab, c->hidden, &m->tok_emb,
                         err);
    if (st == DIFFUSE_OK)
        st = clip_weight(f, prefix, "embeddings.position_embedding.weight", c->max_positions, c->hidden,
                         &m->pos_emb, err);
    if (st == DIFFUSE_OK)
        st = clip_weight(f, prefix, "final_layer_norm.weight", c->hidden, 0, &m->final_ln_w, err);
    if (st == DIFFUSE_OK)
        st = clip_weight(f, prefix, "final_layer_norm.bias", c->hidden, 0, &m->final_ln_b, err);
    for (int l = 0; st == DIFFUSE_OK && l < c->layers; l++) st = clip_load_layer(f, prefix, c, l, &m->layer[l], err);
    if (st != DIFFUSE_OK) {
        clip_text_free(m);
        return st;
    }
    *out = m;
    return DIFFUSE_OK;
}

void clip_text_free(clip_text_model *m) {
    if (!m) return;
    free(m->layer);
    free(m);
}

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

/* Activations of one forward pass, all (M = B*S rows) in backend memory. */
typedef struct clip_acts {
    float *x;        /* (M, C) residual stream */
    float *h;        /* (M, C) normed input / projection output */
    float *q, *k, *v; /* (M, C) */
    float *a;        /* (M, C) attention output */
    float *f;        /* (M, I) MLP hidden */
} clip_acts;

size_t clip_text_workspace_bytes(const clip_text_config *cfg, int batch, int seq) {
    const size_t m = (size_t)batch * seq;
    const size_t floats = 6 * m * cfg->hidden + m * cfg->intermediate;
    return floats * sizeof(float) + 8 * 64 /* alignment */ + BK_OP_SCRATCH_BYTES;
}

#define CLIP_TRY(expr)                          \
    do {                                        \
        diffuse_status st_ = (expr);            \
        if (st_ != DIFFUSE_OK) return st_;      \
    } while (0)

/* x += attn(LN1(x)) with causal self-attention. */
static diffuse_status clip_attention_block(const clip_text_model *m, bk_backend *bk, const clip_layer_weights *w,
                                           clip_acts *t, int batch, int seq) {
    const bk_ops *o = bk->ops;
    const int C = m->cfg.hidden, M = batch * seq, D = C / m->cfg.heads;
    bk_layer_norm_args ln = {t->x, w->ln1_w, w->ln1_b, t->h, M, C, m->cfg.ln_eps};
    CLIP_TRY(o->layer_norm(bk, &ln));
    bk_linear_args lq = {t->h, w->q_w, w->q_b, t->q, M, C, C};
    bk_linear_args lk = {t->h, w->k_w, w->k_b, t->k, M, C, C};
    bk_linear_args lv = {t->h, w->v_w, w->v_b, t->v, M, C, C};
    CLIP_TRY(o->linear(bk, &lq));
    CLIP_TRY(o->linear(bk, &lk));
    CLIP_TRY(o->linear(bk, &lv));
    bk_attention_args at = {t->q, t->k, t->v, t->a, batch, seq, seq, m->cfg.heads, D, C, C,
                            1.0f / sqrtf((float)D), 1};
    CLIP_TRY(o->attention(bk, &at));
    bk_linear_args lo = {t->a, w->o_w, w->o_b, t->h, M, C, C};
    CLIP_TRY(o->linear(bk, &lo));
    return o->add(bk, t->x, t->h, t->x, (size_t)M * C);
}

/* x += fc2(act(fc1(LN2(x)))). */
static diffuse_status clip_mlp_block(const clip_text_model *m, bk_backend *bk, const clip_layer_weights *w,
                                     clip_acts *t, int rows) {
    const bk_ops *o = bk->ops;
    const int C = m->cfg.hidden, I = m->cfg.intermediate;
    bk_layer_norm_args ln = {t->x, w->ln2_w, w->ln2_b, t->h, rows, C, m->cfg.ln_eps};
    CLIP_TRY(o->layer_norm(bk, &ln));
    bk_linear_args l1 = {t->h, w->fc1_w, w->fc1_b, t->f, rows, C, I};
    CLIP_TRY(o->linear(bk, &l1));
    bk_unary act = m->cfg.act == CLIP_ACT_GELU ? BK_UNARY_GELU : BK_UNARY_QUICK_GELU;
    CLIP_TRY(o->unary(bk, act, t->f, t->f, (size_t)rows * I));
    bk_linear_args l2 = {t->f, w->fc2_w, w->fc2_b, t->h, rows, I, C};
    CLIP_TRY(o->linear(bk, &l2));
    return o->add(bk, t->x, t->h, t->x, (size_t)rows * C);
}

static diffuse_status clip_forward_layers(const clip_text_model *m, bk_backend *bk, const int32_t *ids, int batch,
                                          int seq, int n_layers, float *out) {
    const clip_text_config *c = &m->cfg;
    const size_t mc = (size_t)batch * seq * c->hidden;
    clip_acts t;
    float **bufs[6] = {&t.x, &t.h, &t.q, &t.k, &t.v, &t.a};
    for (int i = 0; i < 6; i++)
        if (!(*bufs[i] = bk_alloc(bk, mc * sizeof(float)))) return bk->err.status;
    if (!(t.f = bk_alloc(bk, (size_t)batch * seq * c->intermediate * sizeof(float)))) return bk->err.status;

    CLIP_TRY(bk->ops->embedding(bk, ids, m->tok_emb, c->vocab, m->pos_emb, t.x, batch, seq, c->hidden));
    for (int l = 0; l < n_layers; l++) {
        CLIP_TRY(clip_attention_block(m, bk, &m->layer[l], &t, batch, seq));
        CLIP_TRY(clip_mlp_block(m, bk, &m->layer[l], &t, batch * seq));
    }
    bk_layer_norm_args fin = {t.x, m->final_ln_w, m->final_ln_b, out, batch * seq, c->hidden, c->ln_eps};
    return bk->ops->layer_norm(bk, &fin);
}

diffuse_status clip_text_forward(const clip_text_model *m, bk_backend *bk, const int32_t *ids, int batch, int seq,
                                 int clip_skip, float *out) {
    const clip_text_config *c = &m->cfg;
    if (batch <= 0 || seq <= 0 || seq > c->max_positions)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "text encoder: %d sequences of %d tokens (at most %d positions)", batch, seq, c->max_positions);
    if (clip_skip < 0 || clip_skip >= c->layers)
        return df_fail(&bk->err, DIFFUSE_ERR_INVALID_ARGUMENT,
                       "text encoder: clip_skip %d must be below the number of layers (%d)", clip_skip, c->layers);
    const size_t mark = bk_mark(bk);
    diffuse_status st = clip_forward_layers(m, bk, ids, batch, seq, c->layers - clip_skip, out);
    bk_release(bk, mark);
    return st;
}
