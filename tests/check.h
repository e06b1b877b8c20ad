/*
 * check.h - the checking helpers test_jobs.c and test_embed.c share: CHECK
 * (counts a failure and prints where and why), CHECK_STATUS (a call's status
 * against the one wanted, by name), a millisecond sleep and a monotonic
 * clock. Each test defines nothing else of these; main returns nonzero when
 * `failures` is.
 */
#ifndef DIFFUSE_TESTS_CHECK_H
#define DIFFUSE_TESTS_CHECK_H

#include <diffuse.h>

#include <stdio.h>
#include <time.h>

static int failures;

#define CHECK(cond, ...)                                \
    do {                                                \
        if (!(cond)) {                                  \
            printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                        \
            printf("\n");                               \
            failures++;                                 \
        }                                               \
    } while (0)

#define CHECK_STATUS(expr, want)                                                                       \
    do {                                                                                               \
        diffuse_status got_ = (expr);                                                                  \
        CHECK(got_ == (want), "%s = %s, want %s", #expr, diffuse_status_string(got_),                 \
              diffuse_status_string(want));                                                            \
    } while (0)

static inline void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif /* DIFFUSE_TESTS_CHECK_H */
