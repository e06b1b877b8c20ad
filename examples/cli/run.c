/*
 * run.c - the image commands of `diffuse` (generate, edit, variation): pick
 * the model, refuse to overwrite before any work is done, run the library
 * call with progress and Ctrl-C cancellation, and write each image as a PNG
 * whose text chunks record how to make it again (--from).
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The demo model, where `meson install` puts it and in the source tree
 * (examples/meson.build defines both; the first that exists is used). */
#ifndef DIFFUSE_DEMO_MODEL_INSTALLED
#define DIFFUSE_DEMO_MODEL_INSTALLED ""
#endif
#ifndef DIFFUSE_DEMO_MODEL_SOURCE
#define DIFFUSE_DEMO_MODEL_SOURCE ""
#endif

#define PATH_SIZE 4096

/* ------------------------------------------------------------------------ */
/* Model                                                                     */
/* ------------------------------------------------------------------------ */

int cli_model_path(const cli_opts *o, char *path, size_t size) {
    const char *env = getenv("DIFFUSE_MODEL");
    const char *demo[] = {DIFFUSE_DEMO_MODEL_INSTALLED, DIFFUSE_DEMO_MODEL_SOURCE};
    const char *pick = o->model ? o->model : env && *env ? env : NULL;
    for (size_t i = 0; !pick && i < sizeof demo / sizeof demo[0]; i++)
        if (demo[i][0] && access(demo[i], F_OK) == 0) pick = demo[i];
    if (!pick) {
        fprintf(stderr, "diffuse %s: no model: pass --model DIR|FILE or set DIFFUSE_MODEL (the demo model is "
                        "not installed: looked for %s and %s)\n",
                cli_mode_name(o->mode), DIFFUSE_DEMO_MODEL_INSTALLED, DIFFUSE_DEMO_MODEL_SOURCE);
        return CLI_EXIT_USAGE;
    }
    if ((size_t)snprintf(path, size, "%s", pick) >= size) {
        fprintf(stderr, "diffuse %s: model path too long\n", cli_mode_name(o->mode));
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

int cli_model_load(const char *path, int verbose, diffuse_model **out) {
    char err[2048] = "";
    cli_progress pr;
    cli_progress_init(&pr, 1, verbose);
    diffuse_model_params mp;
    diffuse_model_params_init(&mp);
    mp.error_buf = err;
    mp.error_buf_size = sizeof err;
    mp.log_fn = cli_log_fn;
    mp.log_user = &pr;
    mp.log_level = verbose ? DIFFUSE_LOG_INFO : DIFFUSE_LOG_WARN;
    diffuse_status st = diffuse_model_load(path, &mp, out);
    if (st == DIFFUSE_OK) return CLI_EXIT_OK;
    fprintf(stderr, "diffuse: cannot load model %s: %s (%s)\n", path, err[0] ? err : pr.last_error,
            diffuse_status_string(st));
    return CLI_EXIT_ERROR;
}

/* ------------------------------------------------------------------------ */
/* Output files                                                              */
/* ------------------------------------------------------------------------ */

/* A seed below 2^32 (easy to type back) from the kernel's random source. */
static uint64_t random_seed(void) {
    uint32_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &v, sizeof v) != (ssize_t)sizeof v) v = (uint32_t)time(NULL) ^ (uint32_t)getpid();
    if (fd >= 0) close(fd);
    return v;
}

/* Name of output @i: -o FILE as given for one image; FILE.png -> FILE-i.png
 * for several; diffuse-SEED.png without -o. */
static int output_name(const cli_opts *o, uint32_t i, char *name, size_t size) {
    int n;
    if (!o->out) {
        n = snprintf(name, size, "diffuse-%llu.png", (unsigned long long)(o->seed + i));
    } else if (o->n == 1) {
        n = snprintf(name, size, "%s", o->out);
    } else {
        const char *slash = strrchr(o->out, '/'), *dot = strrchr(o->out, '.');
        const int stem = dot && dot > (slash ? slash : o->out) ? (int)(dot - o->out) : (int)strlen(o->out);
        n = snprintf(name, size, "%.*s-%u%s", stem, o->out, i, o->out + stem);
    }
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* Before any work: every output can be created, and none exists unless
 * --force. Fills names[0..n). */
static int check_outputs(const cli_opts *o, char (*names)[PATH_SIZE]) {
    for (uint32_t i = 0; i < o->n; i++) {
        if (output_name(o, i, names[i], PATH_SIZE)) {
            fprintf(stderr, "diffuse %s: output name too long\n", cli_mode_name(o->mode));
            return CLI_EXIT_USAGE;
        }
        if (!o->force && access(names[i], F_OK) == 0) {
            fprintf(stderr, "diffuse %s: %s exists; pass --force to overwrite it\n", cli_mode_name(o->mode), names[i]);
            return CLI_EXIT_ERROR;
        }
        char dir[PATH_SIZE];
        const char *slash = strrchr(names[i], '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - names[i] + 1) : 1, slash ? names[i] : ".");
        if (access(dir, W_OK) != 0) {
            fprintf(stderr, "diffuse %s: cannot write to %s: %s\n", cli_mode_name(o->mode), dir, strerror(errno));
            return CLI_EXIT_ERROR;
        }
    }
    return CLI_EXIT_OK;
}

/* The text chunks of one output image (docs/diffuse-cli.md lists them). */
static int build_meta(const cli_opts *o, const char *model, const diffuse_image *im, uint64_t seed, cli_meta *m) {
    char buf[64], abs[PATH_MAX];
    int rc = cli_meta_set(m, "Software", "diffuse (libdiffuse)");
    rc |= cli_meta_set(m, "diffuse:version", diffuse_version_string());
    rc |= cli_meta_set(m, "diffuse:mode", cli_mode_name(o->mode));
    rc |= cli_meta_set(m, "diffuse:prompt", o->prompt ? o->prompt : "");
    rc |= cli_meta_set(m, "diffuse:negative_prompt", o->negative);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
    rc |= cli_meta_set(m, "diffuse:seed", buf);
    rc |= cli_meta_set(m, "diffuse:sampler", cli_sampler_name(o->sampler));
    snprintf(buf, sizeof buf, "%u", o->steps);
    rc |= cli_meta_set(m, "diffuse:steps", buf);
    snprintf(buf, sizeof buf, "%.9g", (double)o->guidance); /* %.9g round-trips a float */
    rc |= cli_meta_set(m, "diffuse:guidance", buf);
    snprintf(buf, sizeof buf, "%ux%u", im->width, im->height);
    rc |= cli_meta_set(m, "diffuse:size", buf);
    rc |= cli_meta_set(m, "diffuse:model", realpath(model, abs) ? abs : model);
    if (o->mode == CLI_EDIT || o->mode == CLI_VARIATION) {
        snprintf(buf, sizeof buf, "%.9g", (double)o->strength);
        rc |= cli_meta_set(m, "diffuse:strength", buf);
        rc |= cli_meta_set(m, "diffuse:image", realpath(o->image, abs) ? abs : o->image);
    }
    if (o->mode == CLI_EDIT && o->mask) rc |= cli_meta_set(m, "diffuse:mask", realpath(o->mask, abs) ? abs : o->mask);
    return rc;
}

/* Writes every image, stopping (files written so far are complete) when a
 * signal arrived. Returns an exit status. */
static int write_outputs(const cli_opts *o, const char *model, const diffuse_images *ims, char (*names)[PATH_SIZE]) {
    for (uint32_t i = 0; i < ims->count && i < o->n; i++) {
        if (cli_interrupted()) return 128 + cli_interrupted();
        cli_meta m = {0};
        char err[1024];
        int rc = build_meta(o, model, &ims->images[i], ims->seeds[i], &m);
        if (rc) snprintf(err, sizeof err, "out of memory for metadata");
        else rc = cli_png_write(names[i], &ims->images[i], &m, o->force, err, sizeof err);
        cli_meta_free(&m);
        if (rc) {
            fprintf(stderr, "diffuse %s: %s\n", cli_mode_name(o->mode), err);
            return CLI_EXIT_ERROR;
        }
        printf("wrote %s (%ux%u, seed %llu)\n", names[i], ims->images[i].width, ims->images[i].height,
               (unsigned long long)ims->seeds[i]);
        fflush(stdout);
    }
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* The library call                                                          */
/* ------------------------------------------------------------------------ */

/* Input images of edit and variation. */
typedef struct run_inputs {
    diffuse_image image;
    diffuse_image mask; /* data NULL: no --mask */
} run_inputs;

static int read_inputs(const cli_opts *o, run_inputs *in) {
    char err[1024];
    memset(in, 0, sizeof *in);
    if (o->image && cli_png_read(o->image, &in->image, NULL, err, sizeof err)) {
        fprintf(stderr, "diffuse %s: --image %s\n", cli_mode_name(o->mode), err);
        return CLI_EXIT_ERROR;
    }
    if (o->mask && cli_png_read(o->mask, &in->mask, NULL, err, sizeof err)) {
        fprintf(stderr, "diffuse %s: --mask %s\n", cli_mode_name(o->mode), err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

/* diffuse_generate, diffuse_edit or diffuse_variation with the options. */
static diffuse_status call_library(diffuse_ctx *ctx, const cli_opts *o, const run_inputs *in, diffuse_images **out) {
    if (o->mode == CLI_GENERATE) {
        diffuse_generate_params p;
        diffuse_generate_params_init(&p);
        p.prompt = o->prompt;
        p.negative_prompt = o->negative;
        p.n_images = o->n;
        p.width = o->width;
        p.height = o->height;
        p.steps = o->steps;
        p.guidance_scale = o->guidance;
        p.sampler = o->sampler;
        p.seed = o->seed;
        return diffuse_generate(ctx, &p, out);
    }
    if (o->mode == CLI_EDIT) {
        diffuse_edit_params p;
        diffuse_edit_params_init(&p);
        p.image = &in->image;
        p.mask = in->mask.data ? &in->mask : NULL;
        p.prompt = o->prompt;
        p.negative_prompt = o->negative;
        p.n_images = o->n;
        p.steps = o->steps;
        p.guidance_scale = o->guidance;
        p.strength = o->strength;
        p.sampler = o->sampler;
        p.seed = o->seed;
        p.mask_feather = o->feather;
        return diffuse_edit(ctx, &p, out);
    }
    diffuse_variation_params p;
    diffuse_variation_params_init(&p);
    p.image = &in->image;
    p.prompt = o->prompt; /* NULL = unconditional */
    p.negative_prompt = o->negative;
    p.n_images = o->n;
    p.steps = o->steps;
    p.guidance_scale = o->guidance;
    p.strength = o->strength;
    p.sampler = o->sampler;
    p.seed = o->seed;
    return diffuse_variation(ctx, &p, out);
}

/* Context with our progress and log callbacks, then the call. Returns an
 * exit status; on success *out holds the images. */
static int run_model(const cli_opts *o, const diffuse_model *model, const run_inputs *in, cli_progress *pr,
                     diffuse_images **out) {
    diffuse_ctx_params cp;
    diffuse_ctx_params_init(&cp);
    cp.device = o->device;
    cp.n_threads = o->threads;
    cp.log_fn = cli_log_fn;
    cp.log_user = pr;
    cp.log_level = o->verbose ? DIFFUSE_LOG_INFO : DIFFUSE_LOG_WARN;
    cp.progress_fn = cli_progress_fn;
    cp.progress_user = pr;
    diffuse_ctx *ctx = NULL;
    diffuse_status st = diffuse_ctx_create(model, &cp, &ctx);
    if (st != DIFFUSE_OK) {
        cli_note(pr, "diffuse %s: %s (%s)", cli_mode_name(o->mode),
                 pr->last_error[0] ? pr->last_error : "cannot create a context", diffuse_status_string(st));
        return CLI_EXIT_ERROR;
    }
    st = call_library(ctx, o, in, out);
    cli_progress_done(pr);
    int rc = CLI_EXIT_OK;
    if (st == DIFFUSE_CANCELLED && cli_interrupted()) {
        cli_note(pr, "diffuse %s: cancelled; no file written", cli_mode_name(o->mode));
        rc = 128 + cli_interrupted();
    } else if (st != DIFFUSE_OK) {
        cli_note(pr, "diffuse %s: %s (%s)", cli_mode_name(o->mode), diffuse_ctx_last_error(ctx),
                 diffuse_status_string(st));
        rc = CLI_EXIT_ERROR;
    }
    diffuse_ctx_free(ctx);
    return rc;
}

int cli_run_images(cli_opts *o) {
    char model_path[PATH_SIZE];
    char (*names)[PATH_SIZE] = calloc(o->n, sizeof *names);
    run_inputs in;
    memset(&in, 0, sizeof in);
    diffuse_model *model = NULL;
    diffuse_images *images = NULL;
    cli_progress pr;
    cli_progress_init(&pr, o->quiet, o->verbose);
    if (!o->has_seed) o->seed = random_seed();
    int rc = names ? check_outputs(o, names) : CLI_EXIT_ERROR;
    if (rc == CLI_EXIT_OK) rc = cli_model_path(o, model_path, sizeof model_path);
    if (rc == CLI_EXIT_OK) rc = read_inputs(o, &in);
    if (rc == CLI_EXIT_OK) {
        cli_signals_install();
        if (!o->quiet) cli_note(&pr, "diffuse %s: model %s, seed %llu", cli_mode_name(o->mode), model_path,
                                (unsigned long long)o->seed);
        rc = cli_model_load(model_path, o->verbose, &model);
    }
    if (rc == CLI_EXIT_OK && cli_interrupted()) { /* during the load, which has no progress callback */
        cli_note(&pr, "diffuse %s: interrupted; no file written", cli_mode_name(o->mode));
        rc = 128 + cli_interrupted();
    }
    if (rc == CLI_EXIT_OK) rc = run_model(o, model, &in, &pr, &images);
    if (rc == CLI_EXIT_OK) rc = write_outputs(o, model_path, images, names);
    diffuse_images_free(images);
    diffuse_model_free(model);
    cli_png_free(&in.image);
    cli_png_free(&in.mask);
    free(names);
    return rc;
}
