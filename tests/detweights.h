/*
 * detweights.h - deterministic "random" weights, bit-identical to
 * scripts/detweights.py, so tests can rebuild large reference models from a
 * formula instead of committing their weights. Also builds an in-memory
 * st_file over such tensors for code that looks weights up by name.
 */
#ifndef DIFFUSE_TEST_DETWEIGHTS_H
#define DIFFUSE_TEST_DETWEIGHTS_H

#include "model/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t dw_fnv1a64(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001B3ull;
    }
    return h;
}

static inline float dw_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed + i + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((int64_t)(z >> 40) - (1 << 23)) * (1.0f / 8388608.0f);
}

/* Fills @out with the values detweights.tensor(name, shape) gives. */
static inline void dw_fill(const char *name, float *out, size_t n) {
    const size_t len = strlen(name);
    const int is_weight = len >= 7 && strcmp(name + len - 7, ".weight") == 0;
    const int is_bias = len >= 5 && strcmp(name + len - 5, ".bias") == 0;
    const int is_norm = strstr(name, "norm") != NULL;
    float scale = 1.0f / 32.0f, offset = 0.0f;
    if (is_weight && is_norm) {
        scale = 1.0f / 16.0f;
        offset = 1.0f;
    } else if (is_bias) {
        scale = 1.0f / 32.0f;
    }
    const uint64_t seed = dw_fnv1a64(name);
    for (size_t i = 0; i < n; i++) {
        float v = dw_uniform(seed, i) * scale;
        out[i] = offset != 0.0f ? v + offset : v;
    }
}

/* A tensor to build: its name in the file, the name its values are hashed
 * from (usually the same), and its shape. */
typedef struct dw_spec {
    char name[256];
    char value_name[256];
    int ndim;
    int64_t shape[4];
} dw_spec;

static int dw_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Builds an in-memory st_file (F32, sorted by name as st_find expects) with
 * the tensors of @specs filled by dw_fill. Free with dw_free_file. */
static inline st_file *dw_build_file(const dw_spec *specs, size_t n) {
    st_file *f = calloc(1, sizeof *f);
    f->tensors = calloc(n, sizeof *f->tensors);
    f->n_tensors = n;
    strcpy(f->path, "<detweights>");
    for (size_t i = 0; i < n; i++) {
        st_tensor *t = &f->tensors[i];
        t->name = strdup(specs[i].name);
        t->dtype = ST_F32;
        t->ndim = specs[i].ndim;
        t->numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            t->shape[d] = specs[i].shape[d];
            t->numel *= (size_t)specs[i].shape[d];
        }
        t->nbytes = t->numel * sizeof(float);
        float *data = malloc(t->nbytes);
        dw_fill(specs[i].value_name, data, t->numel);
        t->data = data;
        t->f32 = data;
    }
    qsort(f->tensors, n, sizeof *f->tensors, dw_cmp_name);
    return f;
}

static inline void dw_free_file(st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) {
        free((void *)f->tensors[i].name);
        free((void *)f->tensors[i].data);
    }
    free(f->tensors);
    free(f);
}

#endif /* DIFFUSE_TEST_DETWEIGHTS_H */
