/*
 * readme_example.c - the C usage example shown in README.md: load a model,
 * create a context, generate one image, report what happened. The test
 * suite compiles and runs it. Usage: readme_example MODEL_DIR
 */
#include <diffuse.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [STEPS]\n", argv[0]);
        return 2;
    }
    char error[1024] = "";
    diffuse_model_params mp;
    diffuse_model_params_init(&mp);
    mp.error_buf = error;
    mp.error_buf_size = sizeof error;

    diffuse_model *model = NULL;
    diffuse_status st = diffuse_model_load(argv[1], &mp, &model);
    if (st != DIFFUSE_OK) {
        fprintf(stderr, "load failed: %s: %s\n", diffuse_status_string(st), error);
        return 1;
    }

    diffuse_ctx *ctx = NULL;
    st = diffuse_ctx_create(model, NULL, &ctx); /* NULL params: defaults (device auto) */
    if (st != DIFFUSE_OK) {
        fprintf(stderr, "context failed: %s\n", diffuse_status_string(st));
        diffuse_model_free(model);
        return 1;
    }

    diffuse_generate_params gp;
    diffuse_generate_params_init(&gp);
    gp.prompt = "a small red circle on the left";
    gp.seed = 42;
    if (argc > 2) gp.steps = (uint32_t)strtoul(argv[2], NULL, 10); /* default 30 */

    diffuse_images *images = NULL;
    st = diffuse_generate(ctx, &gp, &images);
    if (st == DIFFUSE_OK) {
        printf("generated %u image(s) of %ux%u\n", images->count, images->images[0].width,
               images->images[0].height);
    } else {
        printf("generate: %s: %s\n", diffuse_status_string(st), diffuse_ctx_last_error(ctx));
    }

    diffuse_images_free(images);
    diffuse_ctx_free(ctx);
    diffuse_model_free(model);
    return st == DIFFUSE_OK ? 0 : 1;
}
