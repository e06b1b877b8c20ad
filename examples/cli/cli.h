/*
 * cli.h - what the parts of the `diffuse` command share: the options of one
 * invocation (options.c), PNG files with text metadata (png.c), the progress
 * display with Ctrl-C cancellation (progress.c) and the image commands
 * (run.c). docs/diffuse-cli.md describes the command for its users.
 */
#ifndef DIFFUSE_CLI_H
#define DIFFUSE_CLI_H

#include <diffuse.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses; a signal that cancels a run exits with 128 + its number. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_ERROR = 1, CLI_EXIT_USAGE = 2 };

typedef enum cli_mode { CLI_GENERATE, CLI_EDIT, CLI_VARIATION, CLI_TOKENIZE, CLI_INFO, CLI_MODE_COUNT } cli_mode;

/* The parsed command line. Every string is owned (freed by cli_opts_free). */
typedef struct cli_opts {
    cli_mode mode;
    char *prompt;          /* NULL until given (positional or from --from) */
    char *negative;        /* "" = unconditional */
    char *model;           /* NULL = the default model */
    char *out;             /* -o; NULL = diffuse-SEED.png */
    char *from;            /* --from: PNG whose metadata gives the defaults */
    char *image;           /* --image (edit, variation) */
    char *mask;            /* --mask (edit) */
    uint32_t n;            /* images, 1..16 */
    uint32_t width, height; /* 0 = model's native size */
    uint32_t steps;
    float guidance;
    float strength;        /* edit, variation */
    float feather;         /* edit: mask_feather in pixels */
    diffuse_sampler sampler;
    uint64_t seed;
    int has_seed;          /* 0: a random seed is drawn */
    diffuse_device device;
    int threads;           /* 0 = all cores */
    int force;             /* overwrite existing files */
    int quiet;             /* no progress output */
    int verbose;           /* library INFO messages */
} cli_opts;

/* options.c: parses argv after the subcommand. Returns CLI_EXIT_OK, or an
 * exit status (CLI_EXIT_USAGE after printing why; CLI_EXIT_OK with *done set
 * after --help). */
int cli_parse(cli_mode mode, int argc, char **argv, cli_opts *o, int *done);
void cli_opts_free(cli_opts *o);
const char *cli_mode_name(cli_mode mode);
const char *cli_sampler_name(diffuse_sampler s);
void cli_usage(FILE *f);

/* ---- png.c -------------------------------------------------------------- */

#define CLI_META_MAX 32

/* Text chunks of a PNG as UTF-8 key/value pairs (owned strings). */
typedef struct cli_meta {
    size_t count;
    char *key[CLI_META_MAX];
    char *value[CLI_META_MAX];
} cli_meta;

const char *cli_meta_get(const cli_meta *m, const char *key);
int cli_meta_set(cli_meta *m, const char *key, const char *value);
void cli_meta_free(cli_meta *m);

/* Reads @path. @img (may be NULL) receives 8-bit pixels, RGBA8 when the file
 * has alpha (an alpha channel or tRNS) and RGB8 otherwise; gray, palette and
 * 16-bit files are converted. @meta (may be NULL) receives its text chunks.
 * Returns 0, or -1 with a message in @err. Free pixels with cli_png_free. */
int cli_png_read(const char *path, diffuse_image *img, cli_meta *meta, char *err, size_t errsz);
void cli_png_free(diffuse_image *img);

/* Writes @img (RGB8 or RGBA8, top-left origin) with @meta as text chunks to
 * a temporary file beside @path, then moves it to @path: a reader never sees
 * a partial file. Without @force an existing @path is left alone (error).
 * Returns 0, or -1 with a message in @err. */
int cli_png_write(const char *path, const diffuse_image *img, const cli_meta *meta, int force, char *err,
                  size_t errsz);

/* ---- progress.c --------------------------------------------------------- */

/* State of the progress display and the log callbacks of one run. */
typedef struct cli_progress {
    int tty;          /* stderr is a terminal: one bar redrawn in place */
    int quiet;        /* print no progress */
    int verbose;      /* print INFO log messages too */
    int line_open;    /* a bar is on screen without its newline */
    int noted_signal; /* the "cancelling" note was printed */
    int stage;        /* stage of the last report; -1 before the first */
    uint32_t image;   /* image_index of the last report */
    double stage_t0;  /* elapsed seconds when the current stage began */
    double last_t;    /* elapsed seconds of the last report */
    double last_draw; /* elapsed seconds when the bar was last drawn */
    char last_error[1024]; /* last ERROR-level log message ("" = none) */
} cli_progress;

void cli_progress_init(cli_progress *pr, int quiet, int verbose);
int cli_progress_fn(const diffuse_progress *p, void *user);
void cli_log_fn(diffuse_log_level level, const char *message, void *user);
/* Prints one line to stderr, ending a bar on screen first. */
void cli_note(cli_progress *pr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_progress_done(cli_progress *pr);

/* SIGINT and SIGTERM set a flag (the progress callback then cancels the
 * run); a second one ends the program at once. */
void cli_signals_install(void);
int cli_interrupted(void); /* the signal number received, or 0 */

/* ---- run.c -------------------------------------------------------------- */

/* Resolves the model path (--model, DIFFUSE_MODEL, the installed or source
 * demo model) into @path. Returns 0, or prints why and returns an exit status. */
int cli_model_path(const cli_opts *o, char *path, size_t size);
/* Loads the model at @path, printing the library's message on failure. */
int cli_model_load(const char *path, int verbose, diffuse_model **out);
int cli_run_images(cli_opts *o);

#endif /* DIFFUSE_CLI_H */
