/*
 * model_nets.c - turns a loaded model's components into the networks'
 * weight tables (text encoder, UNet, VAE) at load time, so a model either
 * loads with every tensor the networks need, checked by name and shape,
 * or not at all. Single files are built from their diffusers view.
 */
#include "model/model.h"

#include "nets/unet.h"
#include "nets/vae.h"
#include "text/clip_text.h"

/* A folder's component as loaded, or a single file's diffusers view
 * (single_file.c) with its inferred config: the networks cannot tell. */
static diffuse_status build_one(diffuse_model *m, df_component c, df_error *err) {
    const df_model_component *mc = &m->comp[c];
    const st_file *f = m->single_file ? m->sf_view[c] : mc->weights;
    const char *prefix = m->single_file ? "" : mc->key_prefix;
    const struct json_object *config = m->single_file ? m->sf_config[c] : mc->config;
    diffuse_status s = DIFFUSE_OK;
    switch (c) {
    case DF_COMP_TEXT_ENCODER:
        s = clip_text_load(f, prefix, config, &m->text_net, err);
        break;
    case DF_COMP_UNET:
        s = unet_load(f, prefix, config, &m->unet_net, err);
        break;
    case DF_COMP_VAE:
        s = vae_load(f, prefix, config, &m->vae_net, err);
        break;
    default:
        break;
    }
    return s == DIFFUSE_OK ? s : df_fail_prefix(err, "%s: %s: ", m->path, df_component_name(c));
}

diffuse_status df_model_build_nets(diffuse_model *m, df_error *err) {
    if (m->single_file && !m->sf_view[DF_COMP_UNET]) return DIFFUSE_OK; /* recognised only */
    for (int c = 0; c < DF_COMP_COUNT; c++) {
        diffuse_status s = build_one(m, (df_component)c, err);
        if (s != DIFFUSE_OK) return s;
    }
    return DIFFUSE_OK;
}

void df_model_free_nets(diffuse_model *m) {
    clip_text_free(m->text_net);
    unet_free(m->unet_net);
    vae_free(m->vae_net);
    m->text_net = NULL;
    m->unet_net = NULL;
    m->vae_net = NULL;
}
