/*
 * common.h - small helpers every part of the library shares: error records
 * that carry a status plus a message with context, and per-owner loggers.
 * Nothing here is global state; each record and logger belongs to one
 * model load or one context.
 */
#ifndef DIFFUSE_COMMON_H
#define DIFFUSE_COMMON_H

#include "diffuse.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#  define DF_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#  define DF_UNUSED __attribute__((unused))
#else
#  define DF_PRINTF(fmt_idx, arg_idx)
#  define DF_UNUSED
#endif

#define DF_ERR_MSG_MAX 1024

/* A failure: what went wrong (status) and the sentence that says where. */
typedef struct df_error {
    diffuse_status status;
    char msg[DF_ERR_MSG_MAX];
} df_error;

/* Records @status with a printf-style message in @err (if non-NULL) and
 * returns @status, so callers can write `return df_fail(err, ...)`. */
diffuse_status df_fail(df_error *err, diffuse_status status, const char *fmt, ...) DF_PRINTF(3, 4);

/* Prefixes the message already in @err with more context ("loading unet: ").
 * Keeps the status. Returns it. */
diffuse_status df_fail_prefix(df_error *err, const char *fmt, ...) DF_PRINTF(2, 3);

/* Clears @err to DIFFUSE_OK with an empty message. */
void df_error_clear(df_error *err);

/* Where log lines of one owner (a model load or a context) go. */
typedef struct df_logger {
    diffuse_log_fn fn;
    void *user;
    diffuse_log_level level;
} df_logger;

/* Formats and delivers a log line if @lg wants @level. NULL-safe. */
void df_log(const df_logger *lg, diffuse_log_level level, const char *fmt, ...) DF_PRINTF(3, 4);

/* Overflow-checked size arithmetic: return 0 on success, 1 on overflow. */
static inline int df_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 1;
    *out = a * b;
    return 0;
}
static inline int df_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 1;
    *out = a + b;
    return 0;
}

/* Copies @src into @dst of @cap bytes, always NUL-terminating (cap > 0). */
void df_strlcpy(char *dst, const char *src, size_t cap);

/* Monotonic clock in seconds. */
double df_now(void);

/* Bytes one pixel of @f takes: 3 for RGB8, 4 for RGBA8 and BGRA8. */
static inline int df_bytes_per_pixel(diffuse_pixel_format f) { return f == DIFFUSE_PIXEL_RGB8 ? 3 : 4; }

#endif /* DIFFUSE_COMMON_H */
