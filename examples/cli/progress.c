/*
 * progress.c - what the `diffuse` command shows while the library works: a
 * bar redrawn in place on a terminal (stage, step/total, it/s, ETA), plain
 * lines otherwise; the library's log messages; and Ctrl-C, which sets a flag
 * that the progress callback turns into a cancel request.
 */
#include "cli.h"

#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Signals                                                                   */
/* ------------------------------------------------------------------------ */

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

void cli_signals_install(void) {
    const int sigs[] = {SIGINT, SIGTERM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old, sa;
        /* A shell starts background jobs with SIGINT ignored; keep it so,
         * as programs should, so Ctrl-C at the terminal leaves them alone. */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND; /* the second Ctrl-C ends the program at once */
        sigaction(sigs[i], &sa, NULL);
    }
}

int cli_interrupted(void) { return (int)g_signal; }

/* ------------------------------------------------------------------------ */
/* Display                                                                   */
/* ------------------------------------------------------------------------ */

static const char *stage_name(diffuse_stage s) {
    switch (s) {
    case DIFFUSE_STAGE_LOAD: return "load";
    case DIFFUSE_STAGE_TEXT: return "text";
    case DIFFUSE_STAGE_ENCODE: return "encode";
    case DIFFUSE_STAGE_DENOISE: return "denoise";
    case DIFFUSE_STAGE_DECODE: return "decode";
    }
    return "work";
}

void cli_progress_init(cli_progress *pr, int quiet, int verbose) {
    memset(pr, 0, sizeof *pr);
    pr->tty = isatty(STDERR_FILENO);
    pr->quiet = quiet;
    pr->verbose = verbose;
    pr->stage = -1;
}

static void end_line(cli_progress *pr) {
    if (!pr->line_open) return;
    fputs("\n", stderr);
    pr->line_open = 0;
}

void cli_note(cli_progress *pr, const char *fmt, ...) {
    end_line(pr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void cli_progress_done(cli_progress *pr) {
    end_line(pr);
    fflush(stderr);
}

/* Steps per second in the current stage, and seconds left in the whole call
 * (this image's remaining steps plus the images after it). */
static void rate_and_eta(const cli_progress *pr, const diffuse_progress *p, double *rate, double *eta) {
    const double dt = p->elapsed_seconds - pr->stage_t0;
    *rate = dt > 0.0 && p->step > 0 ? (double)p->step / dt : 0.0;
    *eta = -1.0;
    if (*rate > 0.0 && p->stage == DIFFUSE_STAGE_DENOISE) {
        const double later = p->image_count > p->image_index + 1 ? p->image_count - p->image_index - 1 : 0;
        *eta = ((double)(p->total - p->step) + later * (double)p->total) / *rate;
    }
}

static void format_eta(double eta, char *buf, size_t size) {
    if (eta < 0.0) {
        snprintf(buf, size, "--:--");
        return;
    }
    const long s = (long)(eta + 0.5);
    if (s >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

/* Terminal: one line, redrawn in place ("\r" and clear to end of line). */
static void draw_bar(cli_progress *pr, const diffuse_progress *p, double rate, double eta) {
    enum { W = 24 };
    char bar[W + 1], left[32];
    const uint32_t fill = p->total ? (uint32_t)((uint64_t)W * p->step / p->total) : 0;
    for (uint32_t i = 0; i < W; i++) bar[i] = i < fill ? '#' : '-';
    bar[W] = '\0';
    fprintf(stderr, "\r\033[Kimage %u/%u %-7s %4u/%-4u [%s]", p->image_index + 1, p->image_count,
            stage_name(p->stage), p->step, p->total, bar);
    if (p->stage == DIFFUSE_STAGE_DENOISE) {
        format_eta(eta, left, sizeof left);
        fprintf(stderr, " %6.2f it/s  ETA %s", rate, left);
    }
    fflush(stderr);
    pr->line_open = 1;
    pr->last_draw = p->elapsed_seconds;
}

/* Not a terminal: one plain line per report, easy to log and to parse. */
static void print_line(const diffuse_progress *p, double rate, double eta) {
    char left[32];
    format_eta(eta, left, sizeof left);
    if (p->stage == DIFFUSE_STAGE_DENOISE)
        fprintf(stderr, "image %u/%u: %s %u/%u (%.2f it/s, ETA %s)\n", p->image_index + 1, p->image_count,
                stage_name(p->stage), p->step, p->total, rate, left);
    else
        fprintf(stderr, "image %u/%u: %s %u/%u\n", p->image_index + 1, p->image_count, stage_name(p->stage), p->step,
                p->total);
    fflush(stderr);
}

int cli_progress_fn(const diffuse_progress *p, void *user) {
    cli_progress *pr = user;
    if ((int)p->stage != pr->stage || p->image_index != pr->image) {
        pr->stage_t0 = pr->last_t; /* the stage began when the previous report came */
        pr->stage = (int)p->stage;
        pr->image = p->image_index;
        pr->last_draw = -1.0;
    }
    pr->last_t = p->elapsed_seconds;
    const int sig = cli_interrupted();
    if (sig && !pr->noted_signal) {
        pr->noted_signal = 1;
        cli_note(pr, "diffuse: %s: cancelling (once more to quit at once)", sig == SIGINT ? "interrupt" : "terminate");
    }
    if (!pr->quiet && !sig) {
        double rate, eta;
        rate_and_eta(pr, p, &rate, &eta);
        const int last = p->step == p->total;
        if (!pr->tty) print_line(p, rate, eta);
        else if (last || pr->last_draw < 0.0 || p->elapsed_seconds - pr->last_draw >= 0.05)
            draw_bar(pr, p, rate, eta);
    }
    return sig != 0;
}

void cli_log_fn(diffuse_log_level level, const char *message, void *user) {
    cli_progress *pr = user;
    if (level == DIFFUSE_LOG_ERROR) {
        /* the command prints the failure itself, with its context */
        snprintf(pr->last_error, sizeof pr->last_error, "%s", message);
        return;
    }
    if (level == DIFFUSE_LOG_WARN || pr->verbose)
        cli_note(pr, "diffuse: %s: %s", level == DIFFUSE_LOG_WARN ? "warning" : "info", message);
}
