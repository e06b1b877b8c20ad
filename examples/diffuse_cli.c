/*
 * diffuse_cli.c - the `diffuse` command: text to image, edit and variation
 * with libdiffuse from the shell, plus `tokenize` and `info` to look at a
 * prompt and a model. This file dispatches the subcommands and holds the two
 * small ones; examples/cli/ holds the rest. docs/diffuse-cli.md is its manual.
 */
#include "cli/cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* `diffuse tokenize PROMPT`: the ids on one line, then "count: N". */
static int cmd_tokenize(const cli_opts *o, const diffuse_model *model) {
    size_t count = 0;
    diffuse_status st = diffuse_tokenize(model, o->prompt, NULL, 0, &count);
    int32_t *ids = st == DIFFUSE_OK ? malloc((count ? count : 1) * sizeof *ids) : NULL;
    if (st == DIFFUSE_OK && !ids) st = DIFFUSE_ERR_OUT_OF_MEMORY;
    if (st == DIFFUSE_OK) st = diffuse_tokenize(model, o->prompt, ids, count, &count);
    if (st != DIFFUSE_OK) {
        fprintf(stderr, "diffuse tokenize: %s\n", diffuse_status_string(st));
        free(ids);
        return CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < count; i++) printf("%s%" PRId32, i ? " " : "", ids[i]);
    printf("\ncount: %zu\n", count);
    if (count > 77)
        fprintf(stderr, "diffuse tokenize: note: %zu ids; the pipelines keep the first 77 (the rest of the prompt "
                        "is ignored)\n", count);
    free(ids);
    return CLI_EXIT_OK;
}

static const char *family_name(diffuse_model_family f) {
    switch (f) {
    case DIFFUSE_FAMILY_SD1: return "SD 1.x";
    case DIFFUSE_FAMILY_SD2: return "SD 2.x";
    case DIFFUSE_FAMILY_UNKNOWN: break;
    }
    return "unknown";
}

/* `diffuse info`: what diffuse_model_get_info says, one "key: value" a line. */
static int cmd_info(const char *path, const diffuse_model *model) {
    diffuse_model_info mi;
    memset(&mi, 0, sizeof mi);
    mi.struct_size = sizeof mi;
    diffuse_status st = diffuse_model_get_info(model, &mi);
    if (st != DIFFUSE_OK) {
        fprintf(stderr, "diffuse info: %s\n", diffuse_status_string(st));
        return CLI_EXIT_ERROR;
    }
    const uint32_t native = mi.sample_size * mi.vae_scale_factor;
    const uint64_t total = mi.unet_parameters + mi.vae_parameters + mi.text_encoder_parameters;
    printf("model: %s\n", path);
    printf("family: %s\n", family_name(mi.family));
    printf("prediction: %s\n", mi.v_prediction ? "v" : "epsilon");
    printf("unet parameters: %" PRIu64 " (in_channels %u%s)\n", mi.unet_parameters, mi.unet_in_channels,
           mi.unet_in_channels == 9 ? ", inpainting" : "");
    printf("vae parameters: %" PRIu64 "\n", mi.vae_parameters);
    printf("text encoder parameters: %" PRIu64 " (hidden %u, %u layers)\n", mi.text_encoder_parameters,
           mi.text_hidden_size, mi.text_layers);
    printf("total parameters: %" PRIu64 "\n", total);
    printf("weight bytes: %" PRIu64 " (%.1f MiB on disk)\n", mi.weight_bytes, (double)mi.weight_bytes / 1048576.0);
    printf("latent: %u channels, 1/%u scale\n", mi.latent_channels, mi.vae_scale_factor);
    printf("native size: %ux%u (latent %ux%u)\n", native, native, mi.sample_size, mi.sample_size);
    printf("weights dtype: %s (kept in memory as float32: %.1f MiB)\n",
           mi.weight_dtype == DIFFUSE_WEIGHTS_F16    ? "float16"
           : mi.weight_dtype == DIFFUSE_WEIGHTS_BF16 ? "bfloat16"
                                                     : "float32",
           (double)mi.host_bytes / 1048576.0);
    /* memory of one image at the native size with guidance, and of four */
    for (uint32_t n = 1; n <= 4; n += 3) {
        diffuse_memory_query q;
        diffuse_memory_query_init(&q);
        q.n_images = n;
        diffuse_memory_estimate e;
        memset(&e, 0, sizeof e);
        e.struct_size = sizeof e;
        st = diffuse_estimate_memory(model, &q, &e);
        if (st != DIFFUSE_OK) {
            printf("memory estimate: unavailable (%s)\n", diffuse_status_string(st));
            break;
        }
        printf("memory estimate (%u image%s %ux%u, guidance, CPU): %.1f MiB peak (model %.1f, working %.1f, "
               "buffers %.1f, images %.1f)%s\n",
               n, n > 1 ? "s" : "", native, native, (double)e.host_bytes / 1048576.0,
               (double)e.model_host_bytes / 1048576.0, (double)e.context_host_bytes / 1048576.0,
               (double)e.run_host_bytes / 1048576.0, (double)e.output_bytes / 1048576.0,
               e.vae_tiled ? ", VAE in tiles" : "");
    }
    return CLI_EXIT_OK;
}

/* tokenize and info: load the model, run, free. */
static int run_model_command(const cli_opts *o) {
    char path[4096];
    diffuse_model *model = NULL;
    int rc = cli_model_path(o, path, sizeof path);
    if (rc == CLI_EXIT_OK) rc = cli_model_load(path, o->verbose, &model);
    if (rc == CLI_EXIT_OK) rc = o->mode == CLI_INFO ? cmd_info(path, model) : cmd_tokenize(o, model);
    diffuse_model_free(model);
    return rc;
}

static int find_mode(const char *name, cli_mode *mode) {
    for (int m = 0; m < CLI_MODE_COUNT; m++)
        if (strcmp(name, cli_mode_name((cli_mode)m)) == 0) {
            *mode = (cli_mode)m;
            return 0;
        }
    return -1;
}

int main(int argc, char **argv) {
    cli_mode mode;
    if (argc < 2) {
        cli_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("diffuse %d.%d.%d (libdiffuse %s loaded)\n", DIFFUSE_VERSION_MAJOR, DIFFUSE_VERSION_MINOR,
               DIFFUSE_VERSION_PATCH, diffuse_version_string());
        return CLI_EXIT_OK;
    }
    if (find_mode(argv[1], &mode)) {
        fprintf(stderr, "diffuse: unknown command '%s'\n\n", argv[1]);
        cli_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    cli_opts o;
    int done = 0;
    int rc = cli_parse(mode, argc - 1, argv + 1, &o, &done);
    if (rc == CLI_EXIT_OK && !done)
        rc = mode == CLI_TOKENIZE || mode == CLI_INFO ? run_model_command(&o) : cli_run_images(&o);
    cli_opts_free(&o);
    return rc;
}
