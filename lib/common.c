/*
 * common.c - error records and loggers (see common.h).
 */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

diffuse_status df_fail(df_error *err, diffuse_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

diffuse_status df_fail_prefix(df_error *err, const char *fmt, ...) {
    if (!err) return DIFFUSE_ERR_INTERNAL;
    char prefix[DF_ERR_MSG_MAX];
    char old[DF_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    /* prefix + old, truncated to the record's size */
    size_t np = strlen(prefix), no = strlen(old);
    if (np > sizeof err->msg - 1) np = sizeof err->msg - 1;
    if (no > sizeof err->msg - 1 - np) no = sizeof err->msg - 1 - np;
    memcpy(err->msg, prefix, np);
    memcpy(err->msg + np, old, no);
    err->msg[np + no] = '\0';
    return err->status;
}

void df_error_clear(df_error *err) {
    if (!err) return;
    err->status = DIFFUSE_OK;
    err->msg[0] = '\0';
}

void df_log(const df_logger *lg, diffuse_log_level level, const char *fmt, ...) {
    if (!lg || !lg->fn || level > lg->level) return;
    char line[DF_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    lg->fn(level, line, lg->user);
}

void df_strlcpy(char *dst, const char *src, size_t cap) {
    if (!dst || cap == 0) return;
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

double df_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
