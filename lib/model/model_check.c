/*
 * model_check.c - checks that a diffusers component's weights match what
 * its config.json implies (a representative set of tensors and shapes per
 * network), reads the sizes the rest of the library needs, and decides the
 * model family. Full per-layer checks come with the networks themselves.
 */
#include "model/json_util.h"
#include "model/model.h"

#include <stdio.h>
#include <string.h>

#define MAX_CH ((int64_t)1 << 20)

/* Fails unless tensor @name of component @c exists, holds float weights and
 * has shape exp[0..nd). @file names the weights file in messages. */
static diffuse_status expect_tensor(const diffuse_model *m, df_component c, const char *file, const char *name,
                                    const int64_t *exp, int nd, df_error *err) {
    char want[256], got[256];
    st_shape_str(exp, nd, want, sizeof want);
    const char *prefix = m->comp[c].key_prefix; /* messages show the key as stored */
    const st_tensor *t = df_model_tensor(m, c, name);
    if (!t)
        return df_fail(err, DIFFUSE_ERR_MODEL_MISSING_TENSOR,
                       "%s: missing tensor \"%s%s\" (config.json implies shape %s)", file, prefix, name, want);
    if (!st_dtype_is_weight(t->dtype))
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED,
                       "%s: tensor \"%s\" has dtype %s; weights must be F32, F16 or BF16", file, t->name,
                       st_dtype_name(t->dtype));
    int same = t->ndim == nd;
    for (int i = 0; same && i < nd; i++) same = t->shape[i] == exp[i];
    if (!same)
        return df_fail(err, DIFFUSE_ERR_MODEL_SHAPE, "%s: tensor \"%s\" has shape %s, config.json implies %s", file,
                       t->name, st_shape_str(t->shape, t->ndim, got, sizeof got), want);
    return DIFFUSE_OK;
}

/* Optional boolean key; @fallback when absent or null. */
static diffuse_status get_bool_opt(const struct json_object *cfg, const char *key, int fallback, const char *file,
                                   int *out, df_error *err) {
    struct json_object *v = NULL;
    *out = fallback;
    if (!json_object_object_get_ex(cfg, key, &v) || v == NULL) return DIFFUSE_OK;
    if (!json_object_is_type(v, json_type_boolean))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" must be true or false, found %s", file, key,
                       dfj_type_name(v));
    *out = json_object_get_boolean(v);
    return DIFFUSE_OK;
}

/* cross_attention_dim is an integer, or one integer per block. */
static diffuse_status get_cross_dim(const struct json_object *cfg, const char *file, int64_t *out, df_error *err) {
    struct json_object *v = NULL;
    if (json_object_object_get_ex(cfg, "cross_attention_dim", &v) && json_object_is_type(v, json_type_array))
        return dfj_get_int_elem(cfg, "cross_attention_dim", 0, file, 1, MAX_CH, out, NULL, err);
    return dfj_get_int(cfg, "cross_attention_dim", file, 1, MAX_CH, out, err);
}

static diffuse_status check_unet(diffuse_model *m, const char *cfgfile, const char *wfile, df_error *err) {
    const struct json_object *cfg = m->comp[DF_COMP_UNET].config;
    df_model_dims *d = &m->dims;
    int64_t c0, temb, kin, kout;
    diffuse_status s;
    if ((s = dfj_get_int(cfg, "in_channels", cfgfile, 1, MAX_CH, &d->unet_in_channels, err)) ||
        (s = dfj_get_int(cfg, "out_channels", cfgfile, 1, MAX_CH, &d->unet_out_channels, err)) ||
        (s = dfj_get_int(cfg, "sample_size", cfgfile, 1, MAX_CH, &d->unet_sample_size, err)) ||
        (s = dfj_get_int_elem(cfg, "block_out_channels", 0, cfgfile, 1, MAX_CH, &c0, NULL, err)) ||
        (s = get_cross_dim(cfg, cfgfile, &d->cross_attention_dim, err)) ||
        (s = dfj_get_int_opt(cfg, "time_embedding_dim", 4 * c0, cfgfile, 1, 4 * MAX_CH, &temb, err)) ||
        (s = dfj_get_int_opt(cfg, "conv_in_kernel", 3, cfgfile, 1, 31, &kin, err)) ||
        (s = dfj_get_int_opt(cfg, "conv_out_kernel", 3, cfgfile, 1, 31, &kout, err)))
        return s;
    const int64_t conv_in[4] = {c0, d->unet_in_channels, kin, kin};
    const int64_t bias[1] = {c0};
    const int64_t lin1[2] = {temb, c0};
    const int64_t conv_out[4] = {d->unet_out_channels, c0, kout, kout};
    const char *temb_type = dfj_get_str_opt(cfg, "time_embedding_type");
    if ((s = expect_tensor(m, DF_COMP_UNET, wfile, "conv_in.weight", conv_in, 4, err)) ||
        (s = expect_tensor(m, DF_COMP_UNET, wfile, "conv_in.bias", bias, 1, err)) ||
        (s = expect_tensor(m, DF_COMP_UNET, wfile, "conv_out.weight", conv_out, 4, err)))
        return s;
    /* Fourier time embeddings take 2*c0 inputs; SD uses positional ones. */
    if (!temb_type || strcmp(temb_type, "positional") == 0)
        s = expect_tensor(m, DF_COMP_UNET, wfile, "time_embedding.linear_1.weight", lin1, 2, err);
    return s;
}

static diffuse_status check_vae(diffuse_model *m, const char *cfgfile, const char *wfile, df_error *err) {
    const struct json_object *cfg = m->comp[DF_COMP_VAE].config;
    df_model_dims *d = &m->dims;
    int64_t c0, out_ch;
    size_t n_blocks = 0;
    int quant, post_quant;
    diffuse_status s;
    if ((s = dfj_get_int(cfg, "in_channels", cfgfile, 1, MAX_CH, &d->vae_in_channels, err)) ||
        (s = dfj_get_int(cfg, "out_channels", cfgfile, 1, MAX_CH, &out_ch, err)) ||
        (s = dfj_get_int(cfg, "latent_channels", cfgfile, 1, MAX_CH, &d->latent_channels, err)) ||
        (s = dfj_get_int_elem(cfg, "block_out_channels", 0, cfgfile, 1, MAX_CH, &c0, &n_blocks, err)) ||
        (s = get_bool_opt(cfg, "use_quant_conv", 1, cfgfile, &quant, err)) ||
        (s = get_bool_opt(cfg, "use_post_quant_conv", 1, cfgfile, &post_quant, err)))
        return s;
    if (n_blocks > 16)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"block_out_channels\" has %zu entries, at most 16",
                       cfgfile, n_blocks);
    d->vae_scale_factor = (int64_t)1 << (n_blocks - 1);
    const int64_t L = d->latent_channels;
    const int64_t enc_in[4] = {c0, d->vae_in_channels, 3, 3};
    const int64_t dec_out[4] = {out_ch, c0, 3, 3};
    const int64_t qc[4] = {2 * L, 2 * L, 1, 1};
    const int64_t pqc[4] = {L, L, 1, 1};
    if ((s = expect_tensor(m, DF_COMP_VAE, wfile, "encoder.conv_in.weight", enc_in, 4, err)) ||
        (s = expect_tensor(m, DF_COMP_VAE, wfile, "decoder.conv_out.weight", dec_out, 4, err)))
        return s;
    if (quant && (s = expect_tensor(m, DF_COMP_VAE, wfile, "quant_conv.weight", qc, 4, err))) return s;
    if (post_quant && (s = expect_tensor(m, DF_COMP_VAE, wfile, "post_quant_conv.weight", pqc, 4, err))) return s;
    return DIFFUSE_OK;
}

static diffuse_status check_text_encoder(diffuse_model *m, const char *cfgfile, const char *wfile, df_error *err) {
    const struct json_object *cfg = m->comp[DF_COMP_TEXT_ENCODER].config;
    df_model_dims *d = &m->dims;
    diffuse_status s;
    if ((s = dfj_get_int(cfg, "hidden_size", cfgfile, 1, MAX_CH, &d->text_hidden_size, err)) ||
        (s = dfj_get_int(cfg, "num_hidden_layers", cfgfile, 1, 1024, &d->text_layers, err)) ||
        (s = dfj_get_int(cfg, "vocab_size", cfgfile, 1, (int64_t)1 << 24, &d->text_vocab_size, err)) ||
        (s = dfj_get_int(cfg, "max_position_embeddings", cfgfile, 1, MAX_CH, &d->text_max_positions, err)))
        return s;
    /* transformers 4 (and every published SD folder) writes "text_model."
     * in front of CLIP keys; transformers 5 does not. Accept both. */
    if (st_find(m->comp[DF_COMP_TEXT_ENCODER].weights, "text_model.embeddings.token_embedding.weight"))
        m->comp[DF_COMP_TEXT_ENCODER].key_prefix = "text_model.";
    const int64_t H = d->text_hidden_size;
    const int64_t tok[2] = {d->text_vocab_size, H};
    const int64_t pos[2] = {d->text_max_positions, H};
    const int64_t norm[1] = {H};
    const int64_t q[2] = {H, H};
    if ((s = expect_tensor(m, DF_COMP_TEXT_ENCODER, wfile, "embeddings.token_embedding.weight", tok, 2,
                           err)) ||
        (s = expect_tensor(m, DF_COMP_TEXT_ENCODER, wfile, "embeddings.position_embedding.weight", pos,
                           2, err)) ||
        (s = expect_tensor(m, DF_COMP_TEXT_ENCODER, wfile, "final_layer_norm.weight", norm, 1, err)))
        return s;
    for (int64_t i = 0; i < d->text_layers; i++) {
        char name[128];
        snprintf(name, sizeof name, "encoder.layers.%lld.self_attn.q_proj.weight", (long long)i);
        if ((s = expect_tensor(m, DF_COMP_TEXT_ENCODER, wfile, name, q, 2, err))) return s;
    }
    return DIFFUSE_OK;
}

diffuse_status df_model_check_component(diffuse_model *m, df_component c, const char *weights_path,
                                        df_error *err) {
    char cfgfile[4200];
    snprintf(cfgfile, sizeof cfgfile, "%s/config.json", m->comp[c].dir);
    switch (c) {
    case DF_COMP_UNET: return check_unet(m, cfgfile, weights_path, err);
    case DF_COMP_VAE: return check_vae(m, cfgfile, weights_path, err);
    case DF_COMP_TEXT_ENCODER: return check_text_encoder(m, cfgfile, weights_path, err);
    default: return df_fail(err, DIFFUSE_ERR_INTERNAL, "unknown component %d", (int)c);
    }
}

diffuse_status df_model_check_pipeline(diffuse_model *m, df_error *err) {
    const df_model_dims *d = &m->dims;
    if (d->cross_attention_dim != d->text_hidden_size)
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                       "%s: unet/config.json cross_attention_dim %lld does not match text_encoder/config.json "
                       "hidden_size %lld",
                       m->path, (long long)d->cross_attention_dim, (long long)d->text_hidden_size);
    const char *act = dfj_get_str_opt(m->comp[DF_COMP_TEXT_ENCODER].config, "hidden_act");
    if (d->cross_attention_dim == 768) m->family = DIFFUSE_FAMILY_SD1;
    else if (d->cross_attention_dim == 1024) m->family = DIFFUSE_FAMILY_SD2;
    else if (act && strcmp(act, "quick_gelu") == 0) m->family = DIFFUSE_FAMILY_SD1;
    else if (act && strcmp(act, "gelu") == 0) m->family = DIFFUSE_FAMILY_SD2;
    else m->family = DIFFUSE_FAMILY_UNKNOWN;
    const char *pred = m->scheduler_config ? dfj_get_str_opt(m->scheduler_config, "prediction_type") : NULL;
    m->dims.v_prediction = pred && strcmp(pred, "v_prediction") == 0;
    return DIFFUSE_OK;
}
