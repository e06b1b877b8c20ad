/*
 * api_check.h - what the public-API CUDA tests (test_cuda_pipeline.c,
 * test_cuda_memory.c) share: a failure count, check() printing PASS/FAIL
 * with a detail, and loading a fixture model by name (exits on failure).
 */
#ifndef DIFFUSE_TESTS_CUDA_API_CHECK_H
#define DIFFUSE_TESTS_CUDA_API_CHECK_H

#include <diffuse.h>

#include <stdio.h>
#include <stdlib.h>

static int failures;

static void check(int ok, const char *what, const char *detail) {
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", what, detail && *detail ? ": " : "", detail ? detail : "");
    failures += !ok;
}

/* tests/fixtures/models/@name (or $DIFFUSE_FIXTURES/models/@name). */
static diffuse_model *load(const char *name) {
    const char *fx = getenv("DIFFUSE_FIXTURES");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/%s", fx ? fx : "tests/fixtures", name);
    diffuse_model *m = NULL;
    const diffuse_status st = diffuse_model_load(path, NULL, &m);
    if (st != DIFFUSE_OK) {
        printf("FAIL loading %s: %s\n", path, diffuse_status_string(st));
        exit(1);
    }
    return m;
}

#endif
