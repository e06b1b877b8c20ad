/*
 * test_rng.c - checks the torch-compatible RNG (lib/sched/rng.c) against
 * draws recorded from torch by scripts/make_sched_fixtures.py
 * (tests/fixtures/sched/rng.bin): fresh draws for several seeds and sizes on
 * both sides of the 16-element switch, a 4x64x64 latent, consecutive draws
 * from one generator (randn and rand mixed), and torch's non-SIMD path.
 * Every value must be bit-identical. Prints a line per case; exits non-zero
 * on any failure.
 */
#include "sched/rng.h"

#include <json-c/json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failed, g_passed;

/* ------------------------------------------------------------------------ */
/* DFFIX 1 fixture files (format: scripts/make_sched_fixtures.py)            */
/* ------------------------------------------------------------------------ */

typedef struct fixture {
    unsigned char *data; /* whole file */
    const unsigned char *payload;
    size_t payload_len;
    json_object *root;
} fixture;

static int fixture_open(fixture *fx, const char *name) {
    const char *dir = getenv("DIFFUSE_FIXTURES");
    char path[1024];
    snprintf(path, sizeof path, "%s/sched/%s", dir ? dir : "tests/fixtures", name);
    memset(fx, 0, sizeof *fx);
    FILE *f = fopen(path, "rb");
    if (!f) { printf("FAIL cannot open %s\n", path); return -1; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    fx->data = malloc((size_t)len + 1);
    if (!fx->data || fread(fx->data, 1, (size_t)len, f) != (size_t)len) { fclose(f); return -1; }
    fclose(f);
    fx->data[len] = 0;
    if (memcmp(fx->data, "DFFIX 1\n", 8) != 0) { printf("FAIL %s: bad magic\n", path); return -1; }
    char *end = NULL;
    size_t jlen = strtoul((char *)fx->data + 8, &end, 10);
    const char *json = end + 1;
    char *copy = malloc(jlen + 1); /* the JSON is followed by binary: parse a copy */
    memcpy(copy, json, jlen);
    copy[jlen] = 0;
    fx->root = json_tokener_parse(copy);
    free(copy);
    fx->payload = (const unsigned char *)json + jlen;
    fx->payload_len = (size_t)len - (size_t)(fx->payload - fx->data);
    if (!fx->root) { printf("FAIL %s: bad JSON\n", path); return -1; }
    return 0;
}

static void fixture_close(fixture *fx) {
    json_object_put(fx->root);
    free(fx->data);
}

/* Float32 array @name; *n receives its element count. */
static const float *fixture_f32(const fixture *fx, const char *name, size_t *n) {
    json_object *arrays, *a, *v;
    if (!json_object_object_get_ex(fx->root, "arrays", &arrays) || !json_object_object_get_ex(arrays, name, &a))
        return NULL;
    json_object_object_get_ex(a, "dtype", &v);
    if (strcmp(json_object_get_string(v), "f4") != 0) return NULL;
    json_object_object_get_ex(a, "shape", &v);
    size_t count = 1;
    for (size_t i = 0; i < json_object_array_length(v); i++)
        count *= (size_t)json_object_get_int64(json_object_array_get_idx(v, i));
    json_object_object_get_ex(a, "offset", &v);
    size_t off = (size_t)json_object_get_int64(v);
    if (off + count * 4 > fx->payload_len) return NULL;
    *n = count;
    return (const float *)(const void *)(fx->payload + off);
}

static json_object *jget(json_object *o, const char *key) {
    json_object *v = NULL;
    json_object_object_get_ex(o, key, &v);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                     */
/* ------------------------------------------------------------------------ */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Largest distance in units in the last place between @a and @b. */
static int64_t max_ulp(const float *a, const float *b, size_t n, size_t *where) {
    int64_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t x = (int32_t)f32_bits(a[i]), y = (int32_t)f32_bits(b[i]);
        if (x < 0) x = INT32_MIN - x;
        if (y < 0) y = INT32_MIN - y;
        int64_t d = x > y ? x - y : y - x;
        if (d > worst || isnan(a[i])) { worst = isnan(a[i]) ? INT32_MAX : d; *where = i; }
    }
    return worst;
}

/* Replays one recorded case: the sizes drawn in order from one generator
 * seeded @seed, with "rand" or "randn" per draw. */
static void check_case(const fixture *fx, json_object *c, df_rng_normal_path path, const char *label) {
    uint64_t seed = strtoull(json_object_get_string(jget(c, "seed")), NULL, 10);
    json_object *sizes = jget(c, "sizes"), *ops = jget(c, "ops");
    size_t n_ref = 0;
    const float *ref = fixture_f32(fx, json_object_get_string(jget(c, "array")), &n_ref);
    if (!ref) { printf("FAIL %s: missing array\n", label); g_failed++; return; }
    float *out = malloc((n_ref + 1) * sizeof *out);
    for (size_t i = 0; i <= n_ref; i++) out[i] = NAN; /* poison, plus one guard */
    df_rng r;
    df_rng_init(&r, seed);
    r.path = path;
    size_t at = 0;
    char desc[256] = "";
    for (size_t k = 0; k < json_object_array_length(sizes); k++) {
        size_t n = (size_t)json_object_get_int64(json_object_array_get_idx(sizes, k));
        int is_rand = ops && strcmp(json_object_get_string(json_object_array_get_idx(ops, k)), "rand") == 0;
        if (at + n > n_ref) break;
        if (is_rand) df_rng_rand(&r, out + at, n);
        else df_rng_randn(&r, out + at, n);
        at += n;
        size_t l = strlen(desc);
        snprintf(desc + l, sizeof desc - l, "%s%s%zu", k ? "," : "", is_rand ? "u" : "", n);
    }
    size_t where = 0;
    int64_t ulp = at == n_ref ? max_ulp(out, ref, n_ref, &where) : INT32_MAX;
    int ok = ulp == 0 && isnan(out[n_ref]);
    printf("%s %s seed=%llu sizes=%s: max ulp diff %lld", ok ? "ok  " : "FAIL", label, (unsigned long long)seed,
           desc, (long long)ulp);
    if (!ok && at == n_ref) printf(" (at %zu: %.9g vs %.9g)", where, out[where], ref[where]);
    printf("\n");
    ok ? g_passed++ : g_failed++;
    free(out);
}

static void check_group(const fixture *fx, const char *group, df_rng_normal_path path) {
    json_object *g = jget(jget(fx->root, "meta"), group);
    json_object *cases = jget(g, "cases");
    printf("# %s path (torch capability %s): %zu cases\n", group, json_object_get_string(jget(g, "capability")),
           json_object_array_length(cases));
    for (size_t i = 0; i < json_object_array_length(cases); i++)
        check_case(fx, json_object_array_get_idx(cases, i), path, group);
}

/* Reseeding resets the stream and the cached normal; a copy forks the
 * stream; a zero-length draw consumes nothing. */
static void check_reseed(void) {
    df_rng a, b;
    float x[3], y[5], z[5];
    df_rng_init(&a, 99);
    df_rng_randn(&a, x, 3); /* leaves a cached normal */
    b = a;
    df_rng_randn(&a, y, 5);
    df_rng_randn(&b, z, 0);
    df_rng_randn(&b, z, 5);
    int ok = memcmp(y, z, sizeof y) == 0;
    df_rng_seed(&a, 99);
    df_rng_randn(&a, z, 3);
    ok = ok && memcmp(x, z, sizeof x) == 0;
    printf("%s reseed, copy and empty draws\n", ok ? "ok  " : "FAIL");
    ok ? g_passed++ : g_failed++;
}

int main(void) {
    fixture fx;
    if (fixture_open(&fx, "rng.bin") != 0) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    json_object *ver = jget(jget(fx.root, "meta"), "versions");
    printf("# reference: torch %s\n", json_object_get_string(jget(ver, "torch")));
    check_group(&fx, "simd", DF_RNG_NORMAL_SIMD);
    check_group(&fx, "libm", DF_RNG_NORMAL_LIBM);
    check_reseed();
    fixture_close(&fx);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
