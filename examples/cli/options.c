/*
 * options.c - the command line of `diffuse`: the options each subcommand
 * takes, their checks and defaults (the library's own *_params_init), the
 * --help texts, and --from, which reads a PNG's metadata as defaults that
 * explicit options then override.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[CLI_MODE_COUNT] = {"generate", "edit", "variation", "tokenize", "info"};

/* Indexed by diffuse_sampler; the names match docs/diffuse-cli.md. */
static const char *const sampler_names[] = {"default", "ddim",   "ddpm",     "pndm",            "lms",       "euler",
                                            "euler_a", "heun",   "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_sde", "unipc"};
#define N_SAMPLERS (sizeof sampler_names / sizeof sampler_names[0])

const char *cli_mode_name(cli_mode mode) { return (unsigned)mode < CLI_MODE_COUNT ? mode_names[mode] : "?"; }

const char *cli_sampler_name(diffuse_sampler s) {
    return (unsigned)s < N_SAMPLERS ? sampler_names[s] : "default";
}

static int sampler_parse(const char *s, diffuse_sampler *out) {
    for (size_t i = 0; i < N_SAMPLERS; i++)
        if (strcmp(s, sampler_names[i]) == 0) {
            *out = (diffuse_sampler)i;
            return 0;
        }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Help                                                                      */
/* ------------------------------------------------------------------------ */

#define COMMON_IMAGE_HELP                                                                                      \
    "  -n, --count N        images to make, 1..16 (default 1); image i uses seed + i\n"                          \
    "      --steps S        denoising steps, 1..1000 (default 30)\n"                                             \
    "      --guidance G     classifier-free guidance scale, 0..100; <= 1 disables (default 7.5)\n"               \
    "      --sampler NAME   default ddim ddpm pndm lms euler euler_a heun dpmpp_2m\n"                            \
    "                       dpmpp_2m_karras dpmpp_sde unipc (default: the model's scheduler)\n"                  \
    "      --seed N         0..2^64-1 (default: random, printed and stored in the PNG)\n"                        \
    "      --negative TEXT  negative prompt\n"                                                                   \
    "  -o, --output FILE    PNG to write (default diffuse-SEED.png); with -n > 1,\n"                             \
    "                       FILE.png becomes FILE-0.png, FILE-1.png, ...\n"                                      \
    "      --force          overwrite existing files (otherwise: error before generating)\n"                     \
    "      --from IMAGE.png take prompt and settings from a PNG this command wrote;\n"                           \
    "                       options given explicitly override them\n"                                            \
    "  -m, --model DIR|FILE diffusers folder or .safetensors (default: $DIFFUSE_MODEL,\n"                        \
    "                       else the demo model)\n"                                                              \
    "      --device D       auto, cpu or cuda (default auto)\n"                                                  \
    "      --threads N      CPU threads (default: all cores)\n"                                                  \
    "  -q, --quiet          no progress output\n"                                                                \
    "  -v, --verbose        show the library's informational messages\n"                                         \
    "  -h, --help           this text\n"

static const char *const help_text[CLI_MODE_COUNT] = {
    "usage: diffuse generate PROMPT [options]\n"
    "Makes images from the text PROMPT and writes them as PNG files.\n\n"
    "      --size WxH       image size, multiples of 8 (default: the model's native size)\n" COMMON_IMAGE_HELP,
    "usage: diffuse edit --image IN.png [--mask MASK.png] PROMPT [options]\n"
    "Repaints part of IN.png following PROMPT. Without --mask, transparent pixels\n"
    "(alpha 0) of IN.png are repainted; with it, white pixels of MASK.png are.\n\n"
    "      --image IN.png   the picture to edit (required)\n"
    "      --mask MASK.png  mask of the same size: white = repaint\n"
    "      --strength S     0..1, how far the masked part may move (default 1)\n"
    "      --feather PX     feathered mask edge when pasting back, pixels (default 0)\n" COMMON_IMAGE_HELP,
    "usage: diffuse variation --image IN.png [PROMPT] [options]\n"
    "Makes variations of IN.png: it is noised to STRENGTH and denoised again.\n\n"
    "      --image IN.png   the picture to vary (required)\n"
    "      --strength S     0..1, how far variations move from it (default 0.7)\n" COMMON_IMAGE_HELP,
    "usage: diffuse tokenize PROMPT [-m MODEL]\n"
    "Prints the CLIP token ids of PROMPT (with start and end tokens) on one line,\n"
    "then \"count: N\". The pipelines use the first 77 ids.\n\n"
    "  -m, --model DIR|FILE model whose tokenizer to use (default: the demo model)\n"
    "  -h, --help           this text\n",
    "usage: diffuse info [-m MODEL]\n"
    "Describes a model: family, component parameter counts, weight bytes,\n"
    "latent channels and scale, native size.\n\n"
    "  -m, --model DIR|FILE the model (default: the demo model)\n"
    "  -v, --verbose        show the library's informational messages\n"
    "  -h, --help           this text\n",
};

void cli_usage(FILE *f) {
    fputs("usage: diffuse COMMAND [options]\n"
          "Text-to-image, edit and variation with Stable Diffusion models (libdiffuse).\n\n"
          "commands:\n"
          "  generate PROMPT               make images from text\n"
          "  edit --image IN.png PROMPT    repaint the transparent or masked part of an image\n"
          "  variation --image IN.png      make variations of an image\n"
          "  tokenize PROMPT               print the prompt's CLIP token ids\n"
          "  info                          describe a model\n\n"
          "'diffuse COMMAND --help' describes each; 'diffuse --version' prints versions.\n"
          "Exit status: 0 success, 1 error, 2 usage error, 130 interrupted (Ctrl-C).\n",
          f);
}

/* ------------------------------------------------------------------------ */
/* Values                                                                    */
/* ------------------------------------------------------------------------ */

static int usage_error(cli_mode mode, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(cli_mode mode, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "diffuse %s: ", mode_names[mode]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'diffuse %s --help'.\n", mode_names[mode]);
    return CLI_EXIT_USAGE;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return -1; /* strtoull would accept "-1" and " 1" */
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out) {
    uint64_t v;
    if (parse_u64(s, &v) || v < lo || v > hi) return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_float(const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* "WxH", both multiples of 8 in 8..8192. */
static int parse_size(const char *s, uint32_t *w, uint32_t *h) {
    const char *x = strchr(s, 'x');
    char buf[32];
    if (!x || (size_t)(x - s) >= sizeof buf) return -1;
    memcpy(buf, s, (size_t)(x - s));
    buf[x - s] = '\0';
    if (parse_u32(buf, 8, 8192, w) || parse_u32(x + 1, 8, 8192, h)) return -1;
    return *w % 8 || *h % 8 ? -1 : 0;
}

static int set_str(char **dst, const char *v) {
    char *c = strdup(v);
    if (!c) return -1;
    free(*dst);
    *dst = c;
    return 0;
}

/* set_str for an option value: an exit status. */
static int set_opt(char **dst, const char *v) {
    if (!set_str(dst, v)) return CLI_EXIT_OK;
    fprintf(stderr, "diffuse: out of memory\n");
    return CLI_EXIT_ERROR;
}

/* ------------------------------------------------------------------------ */
/* Defaults and --from                                                       */
/* ------------------------------------------------------------------------ */

/* Starts from the library's defaults for the call @mode makes. */
static int opts_defaults(cli_mode mode, cli_opts *o) {
    memset(o, 0, sizeof *o);
    o->mode = mode;
    o->n = 1;
    diffuse_generate_params g;
    diffuse_generate_params_init(&g);
    o->steps = g.steps;
    o->guidance = g.guidance_scale;
    o->sampler = g.sampler;
    if (mode == CLI_EDIT) {
        diffuse_edit_params e;
        diffuse_edit_params_init(&e);
        o->steps = e.steps;
        o->guidance = e.guidance_scale;
        o->strength = e.strength;
        o->feather = e.mask_feather;
    } else if (mode == CLI_VARIATION) {
        diffuse_variation_params v;
        diffuse_variation_params_init(&v);
        o->steps = v.steps;
        o->guidance = v.guidance_scale;
        o->strength = v.strength;
    }
    o->device = DIFFUSE_DEVICE_AUTO;
    return set_str(&o->negative, "");
}

void cli_opts_free(cli_opts *o) {
    char **strs[] = {&o->prompt, &o->negative, &o->model, &o->out, &o->from, &o->image, &o->mask};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

/* Parses the value of @key with @ok when the file has it; nonzero when it is
 * there but invalid. */
static int meta_number(const cli_meta *m, const char *key, int (*ok)(const char *, void *), void *dst) {
    const char *v = cli_meta_get(m, key);
    return v && ok(v, dst) ? -1 : 0;
}
static int ok_steps(const char *v, void *d) { return parse_u32(v, 1, 1000, d); }
static int ok_seed(const char *v, void *d) { return parse_u64(v, d); }
static int ok_guidance(const char *v, void *d) { return parse_float(v, 0.0f, 100.0f, d); }
static int ok_strength(const char *v, void *d) { return parse_float(v, 0.0f, 1.0f, d); }

/* --from FILE: the settings stored by cli_run_images become the defaults. */
static int apply_from(cli_opts *o, const char *path) {
    cli_meta m = {0};
    char err[1024];
    if (cli_png_read(path, NULL, &m, err, sizeof err)) {
        fprintf(stderr, "diffuse %s: --from %s\n", mode_names[o->mode], err);
        return CLI_EXIT_ERROR;
    }
    int rc = CLI_EXIT_OK;
    const char *mode = cli_meta_get(&m, "diffuse:mode"), *v;
    const char *bad = NULL;
    if (!mode && !cli_meta_get(&m, "diffuse:prompt")) {
        fprintf(stderr, "diffuse %s: --from %s: the file has no diffuse:* text chunks\n", mode_names[o->mode], path);
        cli_meta_free(&m);
        return CLI_EXIT_ERROR;
    }
    if (mode && strcmp(mode, mode_names[o->mode]) != 0)
        fprintf(stderr, "diffuse %s: note: %s was made by 'diffuse %s'; its settings are reused, but the image "
                        "will not be the same\n", mode_names[o->mode], path, mode);
    if ((v = cli_meta_get(&m, "diffuse:prompt")) && set_str(&o->prompt, v)) bad = "diffuse:prompt";
    if ((v = cli_meta_get(&m, "diffuse:negative_prompt")) && set_str(&o->negative, v)) bad = "diffuse:negative_prompt";
    if ((v = cli_meta_get(&m, "diffuse:model")) && set_str(&o->model, v)) bad = "diffuse:model";
    if ((v = cli_meta_get(&m, "diffuse:sampler")) && sampler_parse(v, &o->sampler)) bad = "diffuse:sampler";
    if (meta_number(&m, "diffuse:steps", ok_steps, &o->steps)) bad = "diffuse:steps";
    if (meta_number(&m, "diffuse:guidance", ok_guidance, &o->guidance)) bad = "diffuse:guidance";
    if (cli_meta_get(&m, "diffuse:seed")) {
        o->has_seed = 1;
        if (meta_number(&m, "diffuse:seed", ok_seed, &o->seed)) bad = "diffuse:seed";
    }
    if (o->mode == CLI_GENERATE && (v = cli_meta_get(&m, "diffuse:size")) && parse_size(v, &o->width, &o->height))
        bad = "diffuse:size";
    if ((o->mode == CLI_EDIT || o->mode == CLI_VARIATION) &&
        meta_number(&m, "diffuse:strength", ok_strength, &o->strength))
        bad = "diffuse:strength";
    /* the input pictures, when the file was made by the same command */
    if (mode && strcmp(mode, mode_names[o->mode]) == 0) {
        if ((v = cli_meta_get(&m, "diffuse:image")) && set_str(&o->image, v)) bad = "diffuse:image";
        if ((v = cli_meta_get(&m, "diffuse:mask")) && set_str(&o->mask, v)) bad = "diffuse:mask";
    }
    if (bad) {
        fprintf(stderr, "diffuse %s: --from %s: invalid %s '%s'\n", mode_names[o->mode], path, bad,
                cli_meta_get(&m, bad) ? cli_meta_get(&m, bad) : "");
        rc = CLI_EXIT_ERROR;
    }
    cli_meta_free(&m);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                   */
/* ------------------------------------------------------------------------ */

enum {
    O_SIZE = 256, O_STEPS, O_GUIDANCE, O_SAMPLER, O_SEED, O_NEGATIVE, O_DEVICE, O_THREADS, O_FORCE, O_FROM,
    O_IMAGE, O_MASK, O_STRENGTH, O_FEATHER
};

#define M_GEN (1u << CLI_GENERATE)
#define M_EDIT (1u << CLI_EDIT)
#define M_VAR (1u << CLI_VARIATION)
#define M_IMG (M_GEN | M_EDIT | M_VAR)
#define M_ALL (M_IMG | (1u << CLI_TOKENIZE) | (1u << CLI_INFO))

/* Every option, and the subcommands that take it. */
static const struct cli_option {
    const char *name;
    int has_arg;
    int id;
    unsigned modes;
} all_options[] = {
    {"count", 1, 'n', M_IMG},        {"output", 1, 'o', M_IMG},        {"model", 1, 'm', M_ALL},
    {"help", 0, 'h', M_ALL},         {"quiet", 0, 'q', M_IMG},         {"verbose", 0, 'v', M_ALL},
    {"size", 1, O_SIZE, M_GEN},      {"steps", 1, O_STEPS, M_IMG},     {"guidance", 1, O_GUIDANCE, M_IMG},
    {"sampler", 1, O_SAMPLER, M_IMG}, {"seed", 1, O_SEED, M_IMG},      {"negative", 1, O_NEGATIVE, M_IMG},
    {"device", 1, O_DEVICE, M_IMG},  {"threads", 1, O_THREADS, M_IMG}, {"force", 0, O_FORCE, M_IMG},
    {"from", 1, O_FROM, M_IMG},      {"image", 1, O_IMAGE, M_EDIT | M_VAR}, {"mask", 1, O_MASK, M_EDIT},
    {"strength", 1, O_STRENGTH, M_EDIT | M_VAR}, {"feather", 1, O_FEATHER, M_EDIT},
};
#define N_OPTIONS (sizeof all_options / sizeof all_options[0])

/* The getopt_long tables of @mode: long options and the short-option string. */
static void option_table(cli_mode mode, struct option *longs, char *shorts) {
    size_t n = 0;
    char *s = shorts;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cli_option *c = &all_options[i];
        if (!(c->modes & (1u << mode))) continue;
        longs[n++] = (struct option){c->name, c->has_arg ? required_argument : no_argument, NULL, c->id};
        if (c->id < 256) {
            *s++ = (char)c->id;
            if (c->has_arg) *s++ = ':';
        }
    }
    longs[n] = (struct option){0, 0, 0, 0};
    *s = '\0';
}

static int device_parse(const char *s, diffuse_device *d) {
    if (strcmp(s, "auto") == 0) *d = DIFFUSE_DEVICE_AUTO;
    else if (strcmp(s, "cpu") == 0) *d = DIFFUSE_DEVICE_CPU;
    else if (strcmp(s, "cuda") == 0) *d = DIFFUSE_DEVICE_CUDA;
    else return -1;
    return 0;
}

static int bad_value(cli_mode mode, const char *option, const char *expected, const char *arg) {
    return usage_error(mode, "%s: expected %s, got '%s'", option, expected, arg);
}

/* Applies one option; returns CLI_EXIT_OK or a usage error. */
static int apply_option(cli_opts *o, int id, const char *arg) {
    const cli_mode md = o->mode;
    uint32_t u;
    switch (id) {
    case 'n': return parse_u32(arg, 1, 16, &o->n) ? bad_value(md, "-n", "1..16", arg) : 0;
    case 'o': return set_opt(&o->out, arg);
    case 'm': return set_opt(&o->model, arg);
    case 'q': o->quiet = 1; return 0;
    case 'v': o->verbose = 1; return 0;
    case O_FORCE: o->force = 1; return 0;
    case O_SIZE:
        return parse_size(arg, &o->width, &o->height) ? bad_value(md, "--size", "WxH, multiples of 8 up to 8192", arg)
                                                      : 0;
    case O_STEPS: return parse_u32(arg, 1, 1000, &o->steps) ? bad_value(md, "--steps", "1..1000", arg) : 0;
    case O_GUIDANCE: return parse_float(arg, 0.0f, 100.0f, &o->guidance) ? bad_value(md, "--guidance", "0..100", arg) : 0;
    case O_STRENGTH: return parse_float(arg, 0.0f, 1.0f, &o->strength) ? bad_value(md, "--strength", "0..1", arg) : 0;
    case O_FEATHER: return parse_float(arg, 0.0f, 256.0f, &o->feather) ? bad_value(md, "--feather", "0..256", arg) : 0;
    case O_SAMPLER: return sampler_parse(arg, &o->sampler) ? bad_value(md, "--sampler", "a sampler name", arg) : 0;
    case O_SEED:
        o->has_seed = 1;
        return parse_u64(arg, &o->seed) ? bad_value(md, "--seed", "0..2^64-1", arg) : 0;
    case O_NEGATIVE: return set_opt(&o->negative, arg);
    case O_DEVICE: return device_parse(arg, &o->device) ? bad_value(md, "--device", "auto, cpu or cuda", arg) : 0;
    case O_THREADS:
        if (parse_u32(arg, 0, 4096, &u)) return bad_value(md, "--threads", "0..4096", arg);
        o->threads = (int)u;
        return 0;
    case O_FROM: return set_opt(&o->from, arg);
    case O_IMAGE: return set_opt(&o->image, arg);
    case O_MASK: return set_opt(&o->mask, arg);
    }
    return usage_error(md, "unexpected option");
}

/* PROMPT and the other operands after the options. */
static int check_operands(cli_opts *o, int argc, char **argv) {
    const cli_mode md = o->mode;
    const int max = md == CLI_INFO ? 0 : 1;
    if (argc > max)
        return max ? usage_error(md, "expected one PROMPT (quote it), got %d arguments: '%s' '%s'...", argc, argv[0],
                                 argv[1])
                   : usage_error(md, "unexpected argument '%s'", argv[0]);
    if (argc == 1 && set_opt(&o->prompt, argv[0])) return CLI_EXIT_ERROR;
    if (!o->prompt && (md == CLI_GENERATE || md == CLI_EDIT || md == CLI_TOKENIZE))
        return usage_error(md, "missing PROMPT");
    if ((md == CLI_EDIT || md == CLI_VARIATION) && !o->image) return usage_error(md, "missing --image IN.png");
    return CLI_EXIT_OK;
}

/* Scans argv for --help and --from only, so that --from's values can be
 * overridden by the options parsed afterwards. It scans a copy: getopt_long
 * reorders what it scans, which would change how the second pass reads it. */
static int first_pass(cli_opts *o, int argc, char **argv, const char *shorts, const struct option *longs,
                      int *done) {
    char *copy[256];
    const char *from = NULL;
    int c;
    if (argc > (int)(sizeof copy / sizeof copy[0])) return usage_error(o->mode, "too many arguments");
    memcpy(copy, argv, (size_t)argc * sizeof *copy);
    opterr = 0;
    optind = 0;
    while ((c = getopt_long(argc, copy, shorts, longs, NULL)) != -1) {
        if (c == 'h') {
            fputs(help_text[o->mode], stdout);
            *done = 1;
            return CLI_EXIT_OK;
        }
        if (c == O_FROM) from = optarg;
    }
    return from ? apply_from(o, from) : CLI_EXIT_OK;
}

int cli_parse(cli_mode mode, int argc, char **argv, cli_opts *o, int *done) {
    struct option longs[N_OPTIONS + 1];
    char shorts[2 * N_OPTIONS + 2];
    *done = 0;
    if (opts_defaults(mode, o)) {
        fprintf(stderr, "diffuse: out of memory\n");
        return CLI_EXIT_ERROR;
    }
    shorts[0] = ':'; /* report a missing value as ':' rather than '?' */
    option_table(mode, longs, shorts + 1);
    int rc = first_pass(o, argc, argv, shorts, longs, done), c;
    if (rc || *done) return rc;
    optind = 0;
    while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        if (c == ':') return usage_error(mode, "option '%s' needs a value", argv[optind - 1]);
        if (c == '?' && optopt > 0 && optopt < 256) return usage_error(mode, "unknown option '-%c'", optopt);
        if (c == '?') return usage_error(mode, "unknown option '%s'", argv[optind - 1]);
        if (c == O_FROM) continue;
        if ((rc = apply_option(o, c, optarg)) != CLI_EXIT_OK) return rc;
    }
    return check_operands(o, argc - optind, argv + optind);
}
