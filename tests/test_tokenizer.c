/*
 * test_tokenizer.c - the CLIP tokenizer against transformers 5.23.0's
 * CLIPTokenizer: every prompt of tests/fixtures/tokenizer/corpus.jsonl,
 * with the folder vocabularies (SD 1.x, SD 2.x old and new config styles,
 * a transformers-5 tokenizer.json folder) and the built-in one, untruncated
 * and padded to 77 as diffusers' pipelines call it (expected.txt.gz, made by
 * scripts/make_tokenizer_fixtures.py). Then the edges: invalid UTF-8, NULL
 * and empty text, small buffers, missing folders, concurrent use.
 */
#include "text/tokenizer.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static int n_checks, n_fail;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        n_checks++;                                                          \
        if (!(cond)) {                                                       \
            n_fail++;                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);             \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------ */
/* Fixture files                                                             */
/* ------------------------------------------------------------------------ */

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char buf[1 << 16];
    size_t n;
    int ok = in && out;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    if (in) fclose(in);
    if (out && fclose(out)) ok = 0;
    return ok;
}

/* A temp folder with clip-sd1's vocabulary and @cfg_dir's config files. */
static int make_folder(char *tmpl, const char *fix, const char *cfg_dir) {
    static const char *const vocab_files[] = {"vocab.json", "merges.txt"};
    static const char *const cfg_files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    char a[4096], b[4096];
    if (!mkdtemp(tmpl)) return 0;
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/clip-sd1/%s", fix, vocab_files[i]);
        snprintf(b, sizeof b, "%s/%s", tmpl, vocab_files[i]);
        if (!copy_file(a, b)) return 0;
        snprintf(a, sizeof a, "%s/%s/%s", fix, cfg_dir, cfg_files[i]);
        snprintf(b, sizeof b, "%s/%s", tmpl, cfg_files[i]);
        if (access(a, R_OK) == 0 && !copy_file(a, b)) return 0;
    }
    return 1;
}

static void remove_folder(const char *dir) {
    static const char *const files[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    char p[4096];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* One line of a gzip file into *buf (grown as needed); 0 at EOF. */
static int gz_line(gzFile f, char **buf, size_t *cap) {
    size_t n = 0;
    for (;;) {
        if (*cap - n < 2) {
            *cap = *cap ? *cap * 2 : 1 << 16;
            *buf = realloc(*buf, *cap);
            if (!*buf) return 0;
        }
        if (!gzgets(f, *buf + n, (int)(*cap - n))) return n > 0;
        n += strlen(*buf + n);
        if (n > 0 && (*buf)[n - 1] == '\n') { (*buf)[n - 1] = '\0'; return 1; }
    }
}

typedef struct corpus { char **text; size_t n; } corpus;

static int load_corpus(const char *path, corpus *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        json_object *o = json_tokener_parse(line);
        if (!o || !json_object_is_type(o, json_type_string) ||
            (size_t)json_object_get_string_len(o) != strlen(json_object_get_string(o))) {
            fprintf(stderr, "corpus line %zu is not a JSON string without NUL\n", c->n + 1);
            json_object_put(o);
            free(line);
            fclose(f);
            return 0;
        }
        if (c->n == cap) {
            cap = cap ? cap * 2 : 1024;
            c->text = realloc(c->text, cap * sizeof *c->text);
        }
        c->text[c->n++] = strdup(json_object_get_string(o));
        json_object_put(o);
    }
    free(line);
    fclose(f);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The corpus against the reference                                          */
/* ------------------------------------------------------------------------ */

enum { CFG_SD1, CFG_SD2, CFG_SD2_MODERN, CFG_TINY, N_CFG };
static const char *const CFG_NAMES[N_CFG] = {"sd1", "sd2", "sd2-modern", "tiny-v5"};

typedef struct under_test {
    const char *name;
    const df_tokenizer *t;
    int cfg;
    int mismatches, checked;
} under_test;

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 90; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 90 ? " ...\n" : "\n");
}

static int printed_mismatches;

static void compare(under_test *u, const corpus *c, size_t idx, int padded, const int32_t *want, size_t n_want) {
    int32_t got[4096];
    size_t n_got = 0;
    df_error err = {0};
    diffuse_status st;
    if (padded) {
        st = df_tokenize_padded(u->t, c->text[idx], 77, got, NULL, &err);
        n_got = 77;
    } else {
        st = df_tokenize(u->t, c->text[idx], got, 4096, &n_got, &err);
    }
    u->checked++;
    int same = st == DIFFUSE_OK && n_got == n_want && n_got <= 4096 &&
               memcmp(got, want, n_want * sizeof *want) == 0;
    if (same) return;
    u->mismatches++;
    if (printed_mismatches++ < 5) {
        json_object *js = json_object_new_string(c->text[idx]);
        fprintf(stderr, "MISMATCH %s %s prompt %zu: %s\n", u->name, padded ? "pad77" : "full", idx,
                json_object_to_json_string_ext(js, JSON_C_TO_STRING_PLAIN));
        json_object_put(js);
        if (st) fprintf(stderr, "    status %d: %s\n", (int)st, err.msg);
        print_ids("expected", want, n_want);
        print_ids("got     ", got, n_got < 4096 ? n_got : 4096);
    }
}

static int run_corpus(const char *fix, const corpus *c, under_test *ut, size_t n_ut) {
    char path[4096];
    if (strlen(fix) > 2048) return 0;
    snprintf(path, sizeof path, "%s/expected.txt.gz", fix);
    gzFile f = gzopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return 0; }
    char *line = NULL;
    size_t cap = 0;
    int ok = gz_line(f, &line, &cap) && strcmp(line, "DFTOK-FIXTURE 1") == 0;
    CHECK(ok, "%s: bad magic/version line", path);
    size_t n_lines = 0, n_prompts = 0;
    int32_t *want = malloc(8192 * sizeof *want);
    while (ok && gz_line(f, &line, &cap)) {
        if (line[0] == '#') continue;
        if (strncmp(line, "reference ", 10) == 0) { printf("fixture %s\n", line); continue; }
        if (strncmp(line, "corpus ", 7) == 0) {
            size_t n = 0;
            sscanf(line, "corpus %*s %zu", &n);
            CHECK(n == c->n, "fixture is for %zu prompts, corpus has %zu", n, c->n);
            continue;
        }
        if (strncmp(line, "configs ", 8) == 0 || strncmp(line, "padded ", 7) == 0) continue;
        if (strncmp(line, "end ", 4) == 0) { sscanf(line, "end %zu", &n_prompts); break; }
        /* "i CONFIG full N ids..." or "i CONFIG pad77 ids..." */
        char *p = line, *end;
        size_t idx = strtoul(p, &end, 10);
        p = end + 1;
        char *sp = strchr(p, ' ');
        if (!sp || idx >= c->n) { CHECK(0, "bad fixture line %.60s", line); break; }
        *sp = '\0';
        int cfg = -1;
        for (int k = 0; k < N_CFG; k++)
            if (strcmp(p, CFG_NAMES[k]) == 0) cfg = k;
        p = sp + 1;
        int padded = strncmp(p, "pad77 ", 6) == 0;
        p += padded ? 6 : 5;
        size_t n = 0;
        if (!padded) n = strtoul(p, &p, 10);
        size_t k = 0;
        while (*p && k < 8192) {
            want[k++] = (int32_t)strtol(p, &end, 10);
            if (end == p) break;
            p = end;
        }
        if (padded) n = k;
        CHECK(cfg >= 0 && k == n, "bad fixture line for prompt %zu", idx);
        for (size_t u = 0; u < n_ut; u++)
            if (ut[u].cfg == cfg) compare(&ut[u], c, idx, padded, want, n);
        n_lines++;
    }
    CHECK(n_prompts == c->n, "fixture ends after %zu prompts, corpus has %zu", n_prompts, c->n);
    free(want);
    free(line);
    gzclose(f);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Edges                                                                     */
/* ------------------------------------------------------------------------ */

static void test_edges(const df_tokenizer *t) {
    int32_t ids[80];
    size_t n = 99;
    df_error err = {0};
    static const char *const bad[] = {"\xff", "abc\xc0\x80", "\xed\xa0\x80 surrogate", "\xf4\x90\x80\x80",
                                      "cut \xe2\x82", "\x80 lone continuation", "ok \xf8\x88\x80\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        diffuse_status st = df_tokenize(t, bad[i], ids, 80, &n, &err);
        CHECK(st == DIFFUSE_ERR_INVALID_ARGUMENT && strstr(err.msg, "UTF-8"), "invalid UTF-8 %zu: status %d (%s)", i,
              (int)st, err.msg);
        st = df_tokenize_padded(t, bad[i], 77, ids, NULL, &err);
        CHECK(st == DIFFUSE_ERR_INVALID_ARGUMENT, "padded invalid UTF-8 %zu: status %d", i, (int)st);
    }
    CHECK(df_tokenize(t, NULL, ids, 80, &n, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "NULL text");
    CHECK(df_tokenize(NULL, "a", ids, 80, &n, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "NULL tokenizer");
    CHECK(df_tokenize(t, "a", ids, 80, NULL, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "NULL count");
    CHECK(df_tokenize(t, "a", NULL, 5, &n, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "NULL ids with cap");
    CHECK(df_tokenize(t, "", ids, 80, &n, NULL) == DIFFUSE_OK && n == 2 && ids[0] == 49406 && ids[1] == 49407,
          "empty text gives BOS EOS");
    /* the ids every CLIP user has seen, independent of the fixture scripts */
    static const int32_t cat[] = {49406, 320, 1125, 539, 320, 2368, 49407};
    CHECK(df_tokenize(t, "a photo of a cat", ids, 80, &n, NULL) == DIFFUSE_OK && n == 7 &&
              memcmp(ids, cat, sizeof cat) == 0,
          "\"a photo of a cat\" is not 49406 320 1125 539 320 2368 49407");
    CHECK(df_tokenize(t, "a photo of a cat", NULL, 0, &n, NULL) == DIFFUSE_OK && n == 7, "count only: %zu", n);
    ids[2] = -5;
    CHECK(df_tokenize(t, "a photo of a cat", ids, 2, &n, NULL) == DIFFUSE_OK && n == 7 && ids[2] == -5,
          "short buffer: count %zu, nothing past cap", n);
    CHECK(df_tokenize_padded(t, "a", 1, ids, NULL, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "max_length 1");
    CHECK(df_tokenize_padded(t, NULL, 77, ids, NULL, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "padded NULL text");
    size_t dropped = 99;
    CHECK(df_tokenize_padded(t, "", 77, ids, &dropped, NULL) == DIFFUSE_OK && dropped == 0 && ids[76] == 49407,
          "padded empty");
    char long_text[4000] = "";
    for (int i = 0; i < 100; i++) strcat(long_text, "cat ");
    CHECK(df_tokenize_padded(t, long_text, 77, ids, &dropped, NULL) == DIFFUSE_OK && dropped == 25 &&
              ids[0] == 49406 && ids[75] == 2368 && ids[76] == 49407,
          "100 cats: dropped %zu", dropped);
    CHECK(df_tokenize_padded(t, "cat", 3, ids, &dropped, NULL) == DIFFUSE_OK && dropped == 0 && ids[1] == 2368,
          "exactly max_length");
    CHECK(df_tokenize_padded(t, "cat cat", 3, ids, &dropped, NULL) == DIFFUSE_OK && dropped == 1 &&
              ids[2] == 49407,
          "one over max_length");
}

static void test_loading(const char *fix) {
    df_tokenizer *t = (df_tokenizer *)1;
    df_error err = {0};
    char p[4096];
    if (strlen(fix) > 2048) return;
    snprintf(p, sizeof p, "%s/no-such-folder", fix);
    CHECK(df_tokenizer_load_dir(p, &t, &err) == DIFFUSE_ERR_NOT_FOUND && t == NULL, "missing folder: %s", err.msg);
    snprintf(p, sizeof p, "%s/clip-sd2", fix); /* configs only, no vocabulary */
    CHECK(df_tokenizer_load_dir(p, &t, &err) == DIFFUSE_ERR_NOT_FOUND, "folder without vocab: %s", err.msg);
    CHECK(df_tokenizer_load_dir(NULL, &t, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "NULL dir");
    CHECK(df_tokenizer_load_builtin((df_clip_flavor)7, &t, &err) == DIFFUSE_ERR_INVALID_ARGUMENT, "bad flavor");
    df_tokenizer_free(NULL);
}

/* Many threads on one tokenizer give what one thread gives. */
typedef struct thread_job { const df_tokenizer *t; const corpus *c; size_t first; int bad; } thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    int32_t a[4096], b[4096];
    for (size_t i = j->first; i < j->c->n; i += 3) {
        size_t na = 0, nb = 0;
        if (df_tokenize(j->t, j->c->text[i], a, 4096, &na, NULL) ||
            df_tokenize(j->t, j->c->text[i], b, 4096, &nb, NULL) || na != nb ||
            memcmp(a, b, (na < 4096 ? na : 4096) * sizeof *a))
            j->bad++;
    }
    return NULL;
}

int main(void) {
    const char *root = getenv("DIFFUSE_FIXTURES");
    char fix[2048], path[4096];
    snprintf(fix, sizeof fix, "%s/tokenizer", root ? root : "tests/fixtures");
    double t0 = now_s();

    corpus c = {0};
    snprintf(path, sizeof path, "%s/corpus.jsonl", fix);
    if (!load_corpus(path, &c) || c.n < 2000) {
        fprintf(stderr, "cannot read the corpus %s (%zu prompts)\n", path, c.n);
        return 1;
    }

    char sd2_dir[] = "/tmp/df_tok_sd2_XXXXXX", sd2m_dir[] = "/tmp/df_tok_sd2m_XXXXXX";
    if (!make_folder(sd2_dir, fix, "clip-sd2") || !make_folder(sd2m_dir, fix, "clip-sd2-modern")) {
        fprintf(stderr, "cannot assemble the SD2 folders\n");
        return 1;
    }
    df_tokenizer *t_sd1 = NULL, *t_sd2 = NULL, *t_sd2m = NULL, *t_tiny = NULL, *b_sd1 = NULL, *b_sd2 = NULL;
    df_error err = {0};
    snprintf(path, sizeof path, "%s/clip-sd1", fix);
    double tl = now_s();
    CHECK(df_tokenizer_load_dir(path, &t_sd1, &err) == DIFFUSE_OK, "load %s: %s", path, err.msg);
    double load_folder_s = now_s() - tl;
    CHECK(df_tokenizer_load_dir(sd2_dir, &t_sd2, &err) == DIFFUSE_OK, "load sd2: %s", err.msg);
    CHECK(df_tokenizer_load_dir(sd2m_dir, &t_sd2m, &err) == DIFFUSE_OK, "load sd2-modern: %s", err.msg);
    snprintf(path, sizeof path, "%s/tiny-v5", fix);
    CHECK(df_tokenizer_load_dir(path, &t_tiny, &err) == DIFFUSE_OK, "load %s: %s", path, err.msg);
    tl = now_s();
    CHECK(df_tokenizer_load_builtin(DF_CLIP_SD1, &b_sd1, &err) == DIFFUSE_OK, "builtin sd1: %s", err.msg);
    double load_builtin_s = now_s() - tl;
    CHECK(df_tokenizer_load_builtin(DF_CLIP_SD2, &b_sd2, &err) == DIFFUSE_OK, "builtin sd2: %s", err.msg);
    remove_folder(sd2_dir);
    remove_folder(sd2m_dir);
    if (!t_sd1 || !t_sd2 || !t_sd2m || !t_tiny || !b_sd1 || !b_sd2) return 1;

    /* what each resolved from its files */
    df_tokenizer_info in;
    const df_tokenizer *clip[] = {t_sd1, t_sd2, t_sd2m, b_sd1, b_sd2};
    const int32_t pads[] = {49407, 0, 0, 49407, 0};
    for (int i = 0; i < 5; i++) {
        df_tokenizer_get_info(clip[i], &in);
        CHECK(in.vocab_size == 49408 && in.n_merges == 48894 && in.bos_id == 49406 && in.eos_id == 49407 &&
                  in.unk_id == 49407 && in.pad_id == pads[i] && in.model_max_length == 77,
              "info %d: vocab %zu merges %zu bos %d eos %d unk %d pad %d max %zu", i, in.vocab_size, in.n_merges,
              in.bos_id, in.eos_id, in.unk_id, in.pad_id, in.model_max_length);
    }

    under_test ut[] = {
        {"folder-sd1", t_sd1, CFG_SD1, 0, 0},         {"builtin-sd1", b_sd1, CFG_SD1, 0, 0},
        {"folder-sd2", t_sd2, CFG_SD2, 0, 0},         {"builtin-sd2", b_sd2, CFG_SD2, 0, 0},
        {"folder-sd2-modern", t_sd2m, CFG_SD2_MODERN, 0, 0}, {"folder-tiny-v5", t_tiny, CFG_TINY, 0, 0},
    };
    size_t n_ut = sizeof ut / sizeof *ut;
    double tc = now_s();
    run_corpus(fix, &c, ut, n_ut);
    double corpus_s = now_s() - tc;
    int total_mismatch = 0;
    for (size_t u = 0; u < n_ut; u++) {
        printf("%-18s %6d sequences checked, %d mismatches\n", ut[u].name, ut[u].checked, ut[u].mismatches);
        CHECK(ut[u].mismatches == 0 && ut[u].checked > 0, "%s: %d mismatches", ut[u].name, ut[u].mismatches);
        total_mismatch += ut[u].mismatches;
    }
    printf("corpus: %zu prompts, %d mismatches (%.2f s)\n", c.n, total_mismatch, corpus_s);

    test_edges(b_sd1);
    test_edges(t_sd1);
    test_loading(fix);

    pthread_t th[3];
    thread_job jobs[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (thread_job){b_sd2, &c, (size_t)i, 0};
        pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].bad == 0, "thread %d: %d prompts differ", i, jobs[i].bad);
    }

    df_tokenizer_free(t_sd1);
    df_tokenizer_free(t_sd2);
    df_tokenizer_free(t_sd2m);
    df_tokenizer_free(t_tiny);
    df_tokenizer_free(b_sd1);
    df_tokenizer_free(b_sd2);
    for (size_t i = 0; i < c.n; i++) free(c.text[i]);
    free(c.text);
    printf("load: folder %.3f s, builtin %.3f s; total %.2f s\n", load_folder_s, load_builtin_s, now_s() - t0);
    printf("%d passed, %d failed\n", n_checks - n_fail, n_fail);
    return n_fail ? 1 : 0;
}
