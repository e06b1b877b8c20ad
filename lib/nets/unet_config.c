/*
 * unet_config.c - reads a UNet2DConditionModel config.json into unet_config
 * the way diffusers' constructor interprets it: missing keys take diffusers'
 * defaults, per-level settings may be one value or a list, and
 * num_attention_heads falls back to attention_head_dim (which SD 1.x configs
 * use for the head count). Settings diffusers accepts but this UNet does not
 * implement are refused by name with DIFFUSE_ERR_UNSUPPORTED.
 */
#include "nets/unet.h"

#include "model/json_util.h"

#include <string.h>

static const char cfg_file[] = "unet/config.json";

static diffuse_status cfg_unsupported(const struct json_object *j, const char *key, const char *supported,
                                      df_error *err) {
    return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: key \"%s\" is %s; this UNet supports %s", cfg_file, key,
                   dfj_value_text(j, key), supported);
}

/* @key absent or null, or else DIFFUSE_ERR_UNSUPPORTED. */
static diffuse_status cfg_want_null(const struct json_object *j, const char *key, df_error *err) {
    struct json_object *v = NULL;
    if (json_object_object_get_ex(j, key, &v) && v) return cfg_unsupported(j, key, "only null", err);
    return DIFFUSE_OK;
}

/* String @key (or @fallback when absent) must be one of @allowed (NULL-ended);
 * *index receives its position. A null value counts as absent. */
static diffuse_status cfg_choice(const struct json_object *j, const char *key, const char *fallback,
                                 const char *const *allowed, const char *supported, int *index, df_error *err) {
    struct json_object *v = NULL;
    const char *s = fallback;
    if (json_object_object_get_ex(j, key, &v) && v) {
        if (!json_object_is_type(v, json_type_string))
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" must be a string, found %s", cfg_file,
                           key, dfj_value_text(j, key));
        s = json_object_get_string(v);
    }
    for (int i = 0; s && allowed[i]; i++) {
        if (strcmp(s, allowed[i]) == 0) {
            *index = i;
            return DIFFUSE_OK;
        }
    }
    return cfg_unsupported(j, key, supported, err);
}

/* An int, or a list of one int per level, within [min, max]; absent or null
 * gives @fallback (which must then be >= min, else the key is required). */
static diffuse_status cfg_per_level(const struct json_object *j, const char *key, int levels, int64_t fallback,
                                    int64_t min, int64_t max, int *out, df_error *err) {
    struct json_object *v = NULL;
    int64_t x = fallback;
    if (json_object_object_get_ex(j, key, &v) && v && json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        if (n != (size_t)levels)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" has %zu entries for %d blocks", cfg_file,
                           key, n, levels);
        for (int i = 0; i < levels; i++) {
            int64_t e;
            NN_TRY(dfj_get_int_elem(j, key, (size_t)i, cfg_file, min, max, &e, NULL, err));
            out[i] = (int)e;
        }
        return DIFFUSE_OK;
    }
    if (v || fallback < min) NN_TRY(dfj_get_int(j, key, cfg_file, min, max, &x, err));
    for (int i = 0; i < levels; i++) out[i] = (int)x;
    return DIFFUSE_OK;
}

/* block_out_channels and the down/up block types. */
static diffuse_status cfg_blocks(const struct json_object *j, unet_config *c, df_error *err) {
    size_t n = 0;
    int64_t ch;
    NN_TRY(dfj_get_int_elem(j, "block_out_channels", 0, cfg_file, 1, 1 << 16, &ch, &n, err));
    if (n > UNET_MAX_LEVELS)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: key \"block_out_channels\" has %zu levels, at most %d",
                       cfg_file, n, UNET_MAX_LEVELS);
    c->levels = (int)n;
    for (int i = 0; i < c->levels; i++) {
        NN_TRY(dfj_get_int_elem(j, "block_out_channels", (size_t)i, cfg_file, 1, 1 << 16, &ch, NULL, err));
        c->block_out[i] = (int)ch;
    }
    static const char *const types[2][3] = {{"DownBlock2D", "CrossAttnDownBlock2D", NULL},
                                            {"UpBlock2D", "CrossAttnUpBlock2D", NULL}};
    static const char *const keys[2] = {"down_block_types", "up_block_types"};
    for (int k = 0; k < 2; k++) {
        struct json_object *arr = NULL;
        if (!json_object_object_get_ex(j, keys[k], &arr) || !json_object_is_type(arr, json_type_array) ||
            json_object_array_length(arr) != n)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: key \"%s\" must list %zu block types, found %s",
                           cfg_file, keys[k], n, dfj_value_text(j, keys[k]));
        for (int i = 0; i < c->levels; i++) {
            const char *s = json_object_get_string(json_object_array_get_idx(arr, (size_t)i));
            if (s && strncmp(s, "UNetRes", 7) == 0) s += 7; /* diffusers strips this prefix */
            int t = -1;
            for (int a = 0; s && t < 0 && types[k][a]; a++)
                if (strcmp(s, types[k][a]) == 0) t = a;
            if (t < 0)
                return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: key \"%s\"[%d] is %s; this UNet supports %s and %s",
                               cfg_file, keys[k], i,
                               json_object_to_json_string(json_object_array_get_idx(arr, (size_t)i)), types[k][0],
                               types[k][1]);
            (k == 0 ? c->down_attn : c->up_attn)[i] = t;
        }
    }
    return DIFFUSE_OK;
}

/* Attention heads, transformer depth and cross-attention width. */
static diffuse_status cfg_attention(const struct json_object *j, unet_config *c, df_error *err) {
    struct json_object *v = NULL;
    const char *heads_key = json_object_object_get_ex(j, "num_attention_heads", &v) && v ? "num_attention_heads"
                                                                                         : "attention_head_dim";
    NN_TRY(cfg_per_level(j, heads_key, c->levels, 8, 1, 1 << 16, c->heads, err));
    if (json_object_object_get_ex(j, "transformer_layers_per_block", &v) && v &&
        json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0 &&
        json_object_is_type(json_object_array_get_idx(v, 0), json_type_array))
        return cfg_unsupported(j, "transformer_layers_per_block", "an int or one int per block", err);
    NN_TRY(cfg_per_level(j, "transformer_layers_per_block", c->levels, 1, 1, 1024, c->tf_layers, err));
    NN_TRY(cfg_want_null(j, "reverse_transformer_layers_per_block", err));
    int cross[UNET_MAX_LEVELS];
    NN_TRY(cfg_per_level(j, "cross_attention_dim", c->levels, 1280, 1, 1 << 16, cross, err));
    for (int i = 1; i < c->levels; i++)
        if (cross[i] != cross[0]) return cfg_unsupported(j, "cross_attention_dim", "one width for all blocks", err);
    c->cross_dim = cross[0];
    int b;
    NN_TRY(dfj_get_bool_opt(j, "use_linear_projection", 0, cfg_file, &c->linear_proj, err));
    NN_TRY(dfj_get_bool_opt(j, "upcast_attention", 0, cfg_file, &b, err)); /* float32 here: no effect */
    NN_TRY(dfj_get_bool_opt(j, "dual_cross_attention", 0, cfg_file, &b, err));
    if (b) return cfg_unsupported(j, "dual_cross_attention", "false", err);
    if (json_object_object_get_ex(j, "only_cross_attention", &v) && v) {
        int any = 0;
        if (json_object_is_type(v, json_type_array))
            for (size_t i = 0; i < json_object_array_length(v); i++)
                any |= json_object_get_boolean(json_object_array_get_idx(v, i));
        else
            NN_TRY(dfj_get_bool_opt(j, "only_cross_attention", 0, cfg_file, &any, err));
        if (any) return cfg_unsupported(j, "only_cross_attention", "false", err);
    }
    static const char *const attn_types[] = {"default", NULL};
    int t;
    return cfg_choice(j, "attention_type", "default", attn_types, "\"default\"", &t, err);
}

/* Time embedding and the embeddings this UNet does not have. */
static diffuse_status cfg_time(const struct json_object *j, unet_config *c, df_error *err) {
    static const char *const positional[] = {"positional", NULL}, *const silu[] = {"silu", "swish", NULL},
                             *const shift[] = {"default", NULL};
    int t;
    double d;
    NN_TRY(cfg_choice(j, "time_embedding_type", "positional", positional, "\"positional\"", &t, err));
    NN_TRY(cfg_choice(j, "act_fn", "silu", silu, "\"silu\"", &t, err));
    NN_TRY(cfg_choice(j, "resnet_time_scale_shift", "default", shift, "\"default\"", &t, err));
    NN_TRY(dfj_get_bool_opt(j, "flip_sin_to_cos", 1, cfg_file, &c->flip_sin_to_cos, err));
    NN_TRY(dfj_get_number_opt(j, "freq_shift", 0.0, cfg_file, &d, err));
    c->freq_shift = (float)d;
    int64_t td;
    NN_TRY(dfj_get_int_opt(j, "time_embedding_dim", 4 * (int64_t)c->block_out[0], cfg_file, 1, 1 << 20, &td, err));
    c->time_dim = (int)td;
    static const char *const nulls[] = {"class_embed_type",  "num_class_embeds",   "addition_embed_type",
                                        "encoder_hid_dim",   "encoder_hid_dim_type", "time_cond_proj_dim",
                                        "timestep_post_act", "time_embedding_act_fn"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) NN_TRY(cfg_want_null(j, nulls[i], err));
    return DIFFUSE_OK;
}

/* Channels, kernels, norms, mid block, sample size. */
static diffuse_status cfg_shape(const struct json_object *j, unet_config *c, df_error *err) {
    int64_t v;
    NN_TRY(dfj_get_int_opt(j, "in_channels", 4, cfg_file, 1, 1 << 16, &v, err));
    c->in_channels = (int)v;
    NN_TRY(dfj_get_int_opt(j, "out_channels", 4, cfg_file, 1, 1 << 16, &v, err));
    c->out_channels = (int)v;
    NN_TRY(dfj_get_int_opt(j, "conv_in_kernel", 3, cfg_file, 1, 15, &v, err));
    c->conv_in_kernel = (int)v;
    NN_TRY(dfj_get_int_opt(j, "conv_out_kernel", 3, cfg_file, 1, 15, &v, err));
    c->conv_out_kernel = (int)v;
    if (!(c->conv_in_kernel & 1) || !(c->conv_out_kernel & 1))
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "%s: conv_in_kernel %d / conv_out_kernel %d must be odd",
                       cfg_file, c->conv_in_kernel, c->conv_out_kernel);
    NN_TRY(dfj_get_int_opt(j, "downsample_padding", 1, cfg_file, 0, 1, &v, err));
    c->downsample_padding = (int)v;
    struct json_object *g = NULL;
    if (json_object_object_get_ex(j, "norm_num_groups", &g) && !g)
        return cfg_unsupported(j, "norm_num_groups", "an integer (GroupNorm)", err);
    NN_TRY(dfj_get_int_opt(j, "norm_num_groups", 32, cfg_file, 1, 1 << 16, &v, err));
    c->groups = (int)v;
    double d;
    NN_TRY(dfj_get_number_opt(j, "norm_eps", 1e-5, cfg_file, &d, err));
    c->eps = (float)d;
    NN_TRY(dfj_get_number_opt(j, "mid_block_scale_factor", 1.0, cfg_file, &d, err));
    c->mid_scale = (float)d;
    if (!(c->eps >= 0.0f) || !(c->mid_scale > 0.0f))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: norm_eps %g must be >= 0, mid_block_scale_factor %g > 0",
                       cfg_file, (double)c->eps, (double)c->mid_scale);
    NN_TRY(dfj_get_bool_opt(j, "center_input_sample", 0, cfg_file, &c->center_input_sample, err));
    struct json_object *mid = NULL;
    c->mid_block = 1;
    if (json_object_object_get_ex(j, "mid_block_type", &mid) && !mid) {
        c->mid_block = 0;
    } else {
        static const char *const mids[] = {"UNetMidBlock2DCrossAttn", NULL};
        int t;
        NN_TRY(cfg_choice(j, "mid_block_type", "UNetMidBlock2DCrossAttn", mids, "\"UNetMidBlock2DCrossAttn\" or null",
                          &t, err));
    }
    int ss[2] = {0, 0};
    struct json_object *s = NULL;
    if (json_object_object_get_ex(j, "sample_size", &s) && s && json_object_is_type(s, json_type_array)) {
        for (int i = 0; i < 2; i++) {
            int64_t e;
            NN_TRY(dfj_get_int_elem(j, "sample_size", (size_t)i, cfg_file, 1, 1 << 16, &e, NULL, err));
            ss[i] = (int)e;
        }
    } else if (s) {
        NN_TRY(dfj_get_int(j, "sample_size", cfg_file, 1, 1 << 16, &v, err));
        ss[0] = ss[1] = (int)v;
    }
    c->sample_size[0] = ss[0];
    c->sample_size[1] = ss[1];
    return DIFFUSE_OK;
}

/* Every level's channels divisible by the groups; heads fit the channels. */
static diffuse_status cfg_check(const unet_config *c, df_error *err) {
    for (int i = 0; i < c->levels; i++) {
        if (c->block_out[i] % c->groups)
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG,
                           "%s: block_out_channels[%d] = %d is not divisible by norm_num_groups %d", cfg_file, i,
                           c->block_out[i], c->groups);
        if (c->heads[i] > c->block_out[i])
            return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: %d attention heads at level %d exceed its %d channels",
                           cfg_file, c->heads[i], i, c->block_out[i]);
    }
    return DIFFUSE_OK;
}

diffuse_status unet_read_config(const struct json_object *j, unet_config *c, df_error *err) {
    memset(c, 0, sizeof *c);
    if (!j || !json_object_is_type(j, json_type_object))
        return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "%s: not a JSON object", cfg_file);
    NN_TRY(cfg_blocks(j, c, err));
    NN_TRY(cfg_per_level(j, "layers_per_block", c->levels, 2, 1, 64, c->layers, err));
    NN_TRY(cfg_attention(j, c, err));
    NN_TRY(cfg_time(j, c, err));
    NN_TRY(cfg_shape(j, c, err));
    return cfg_check(c, err);
}
