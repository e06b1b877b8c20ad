/*
 * tokenizer.c - tokenizing with a loaded df_tokenizer, step by step as the
 * tokenizers library runs CLIPTokenizer's pipeline: split out added tokens
 * (raw, then normalized), normalize, CLIP's split pattern, ByteLevel,
 * BPE in the library's merge order, then BOS ... EOS and, for pipelines,
 * truncation and padding to 77.
 */
#include "text/tokenizer_internal.h"
#include "text/unicode.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Normalizer: NFC, \s+ -> " ", lowercase                                    */
/* ------------------------------------------------------------------------ */

diffuse_status df_tok_normalize(const char *s, size_t n, char **out, size_t *out_len, df_error *err) {
    uint32_t *cps = malloc((n + 1) * sizeof *cps);
    uint32_t *nfc = malloc((df_uc_nfd_bound(n) + 1) * sizeof *nfc);
    uint32_t *low = NULL;
    char *o = NULL;
    diffuse_status st = DIFFUSE_OK;
    if (!cps || !nfc) { st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); goto done; }
    long m = df_utf8_decode(s, n, cps, NULL);
    if (m < 0) {
        st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: invalid UTF-8 in \"%.*s\"", (int)n, s);
        goto done;
    }
    size_t k = df_uc_nfc(cps, (size_t)m, nfc);
    /* collapse each whitespace run to one space */
    size_t w = 0;
    int in_space = 0;
    for (size_t i = 0; i < k; i++) {
        int sp = df_uc_is_space(nfc[i]);
        if (!sp || !in_space) nfc[w++] = sp ? ' ' : nfc[i];
        in_space = sp;
    }
    k = w;
    low = malloc((k * 3 + 1) * sizeof *low);
    if (!low) { st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); goto done; }
    size_t L = 0;
    for (size_t i = 0; i < k; i++) L += df_uc_lower(nfc[i], low + L);
    o = malloc(L * 4 + 1);
    if (!o) { st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); goto done; }
    size_t b = 0;
    for (size_t i = 0; i < L; i++) b += df_utf8_encode(low[i], o + b);
    o[b] = '\0';
    *out = o;
    *out_len = b;
    o = NULL;
done:
    free(cps);
    free(nfc);
    free(low);
    free(o);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Tokenizing                                                                */
/* ------------------------------------------------------------------------ */

typedef struct id_vec { int32_t *v; size_t n, cap; } id_vec;

static int id_push(id_vec *o, int32_t id) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        int32_t *v = realloc(o->v, cap * sizeof *v);
        if (!v) return -1;
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = id;
    return 0;
}

/* BPE symbol of tokenizers' Word: id, neighbours, byte length (0 = merged away). */
typedef struct bpe_sym { int32_t c; int32_t prev, next; int32_t len; } bpe_sym;
typedef struct bpe_merge { int32_t rank, pos, new_id; } bpe_merge;

/* Scratch for one call: BPE words and heaps. */
typedef struct scratch {
    bpe_sym *sym;
    bpe_merge *heap;
    size_t sym_cap, heap_cap, heap_n;
} scratch;

static int merge_less(const bpe_merge *a, const bpe_merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(scratch *s, bpe_merge m) {
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
        bpe_merge *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return -1;
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0 && merge_less(&m, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = m;
    return 0;
}

static bpe_merge heap_pop(scratch *s) {
    bpe_merge top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && merge_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!merge_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static int push_pair(const df_tokenizer *t, scratch *s, int32_t pos) {
    const merge_slot *m = df_merge_get(t, s->sym[pos].c, s->sym[s->sym[pos].next].c);
    return m ? heap_push(s, (bpe_merge){m->rank, pos, m->new_id}) : 0;
}

/* BPE of one word (@b, @n bytes), appending ids to @o: tokenizers'
 * BPE::merge_word + Word::merge_all (min-heap on rank, then position). */
static diffuse_status bpe_word(const df_tokenizer *t, scratch *s, const unsigned char *b, size_t n, id_vec *o,
                               df_error *err) {
    if (n > s->sym_cap) {
        size_t cap = n * 2;
        bpe_sym *sym = realloc(s->sym, cap * sizeof *sym);
        if (!sym) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        s->sym = sym;
        s->sym_cap = cap;
    }
    int32_t ns = (int32_t)n;
    for (int32_t i = 0; i < ns; i++) {
        int32_t id = i == ns - 1 ? t->sym_end_id[b[i]] : t->sym_id[b[i]];
        if (id < 0) {
            if (t->unk_id < 0)
                return df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "tokenizer: byte 0x%02x is not in the vocabulary and "
                               "there is no unk token", b[i]);
            id = t->unk_id; /* fuse_unk is off: one unk per unknown symbol */
        }
        s->sym[i] = (bpe_sym){id, i - 1, i + 1 < ns ? i + 1 : -1, 1};
    }
    s->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (push_pair(t, s, i)) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    while (s->heap_n) {
        bpe_merge top = heap_pop(s);
        bpe_sym *cur = &s->sym[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        int32_t next_pos = cur->next;
        bpe_sym right = s->sym[next_pos];
        const merge_slot *m = df_merge_get(t, cur->c, right.c);
        if (!m || m->new_id != top.new_id) continue; /* stale entry */
        cur->c = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        s->sym[next_pos].len = 0;
        if (right.next > -1) s->sym[right.next].prev = top.pos;
        if (cur->prev >= 0 && push_pair(t, s, cur->prev))
            return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        if (cur->next >= 0 && push_pair(t, s, top.pos))
            return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    }
    for (int32_t i = 0; i < ns; i++)
        if (s->sym[i].len && id_push(o, s->sym[i].c))
            return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    return DIFFUSE_OK;
}

/* Length of ASCII literal @lit at @c[0..n), or 0. */
static size_t match_lit(const uint32_t *c, size_t n, const char *lit) {
    size_t k = strlen(lit);
    if (k > n) return 0;
    for (size_t i = 0; i < k; i++)
        if (c[i] != (unsigned char)lit[i]) return 0;
    return k;
}

/* 's|'t|'re|'ve|'m|'ll|'d, tried in that order. */
static size_t match_contraction(const uint32_t *c, size_t n) {
    static const char *const alts[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    if (n < 2 || c[0] != '\'') return 0;
    for (int i = 0; i < 7; i++) {
        size_t k = match_lit(c, n, alts[i]);
        if (k) return k;
    }
    return 0;
}

static int is_other(uint32_t cp) { return !df_uc_is_space(cp) && !df_uc_is_letter(cp) && !df_uc_is_number(cp); }

/* Byte-level BPE of a pre-tokenized piece c[0..n): ByteLevel's own regex
 * ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|...) splits
 * it again -- this is what turns a literal "<|startoftext|>" piece into
 * "<|", "startoftext", "|>" -- then each part's UTF-8 bytes go through BPE. */
static diffuse_status bytelevel_bpe(const df_tokenizer *t, scratch *s, const uint32_t *c, size_t n,
                                    unsigned char *bytes, id_vec *o, df_error *err) {
    size_t i = 0;
    while (i < n) {
        size_t k = match_contraction(c + i, n - i);
        if (!k) {
            int (*cls)(uint32_t) = df_uc_is_letter(c[i]) ? df_uc_is_letter
                                   : df_uc_is_number(c[i]) ? df_uc_is_number : is_other;
            k = 1;
            while (i + k < n && cls(c[i + k])) k++;
        }
        size_t nb = 0;
        for (size_t j = i; j < i + k; j++) nb += df_utf8_encode(c[j], (char *)bytes + nb);
        diffuse_status st = bpe_word(t, s, bytes, nb, o, err);
        if (st) return st;
        i += k;
    }
    return DIFFUSE_OK;
}

/* CLIP's split on normalized text c[0..n) (no added tokens inside):
 * <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * with the matches kept and the rest (whitespace) removed. */
static diffuse_status clip_split_bpe(const df_tokenizer *t, scratch *s, const uint32_t *c, size_t n,
                                     unsigned char *bytes, id_vec *o, df_error *err) {
    size_t i = 0;
    while (i < n) {
        if (df_uc_is_space(c[i])) { i++; continue; }
        size_t k = match_lit(c + i, n - i, "<|startoftext|>");
        if (!k) k = match_lit(c + i, n - i, "<|endoftext|>");
        if (!k) k = match_contraction(c + i, n - i);
        if (!k) {
            k = 1;
            if (df_uc_is_letter(c[i])) {
                while (i + k < n && df_uc_is_letter(c[i + k])) k++;
            } else if (!df_uc_is_number(c[i])) {
                while (i + k < n && is_other(c[i + k])) k++;
            }
        }
        diffuse_status st = bytelevel_bpe(t, s, c + i, k, bytes, o, err);
        if (st) return st;
        i += k;
    }
    return DIFFUSE_OK;
}

/* The leftmost-longest occurrence in s[from..n) of an added token of the
 * given kind (normalized or not): returns its index or -1, start in *at. */
static long find_added(const df_tokenizer *t, int normalized, const char *s, size_t from, size_t n, size_t *at) {
    int any = 0;
    for (size_t i = 0; i < t->n_added; i++) any |= t->added[i].normalized == normalized;
    for (size_t p = from; any && p < n; p++) {
        long best = -1;
        size_t best_len = 0;
        for (size_t i = 0; i < t->n_added; i++) {
            const added_token *a = &t->added[i];
            if (a->normalized != normalized || a->match_len == 0 || a->match_len > n - p) continue;
            if (a->match_len > best_len && memcmp(s + p, a->match, a->match_len) == 0) {
                best = (long)i;
                best_len = a->match_len;
            }
        }
        if (best >= 0) { *at = p; return best; }
    }
    return -1;
}

/* Whitespace (White_Space) run ending at s[end) / starting at s[start). */
static size_t space_run_before(const char *s, size_t lo, size_t end) {
    while (end > lo) {
        size_t b = end - 1;
        while (b > lo && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        if (df_utf8_decode(s + b, end - b, &cp, NULL) != 1 || !df_uc_is_space(cp)) break;
        end = b;
    }
    return end;
}

static size_t space_run_after(const char *s, size_t start, size_t n) {
    while (start < n) {
        size_t len = 1;
        unsigned char c = (unsigned char)s[start];
        if (c >= 0xF0) len = 4; else if (c >= 0xE0) len = 3; else if (c >= 0xC0) len = 2;
        uint32_t cp;
        if (start + len > n || df_utf8_decode(s + start, len, &cp, NULL) != 1 || !df_uc_is_space(cp)) break;
        start += len;
    }
    return start;
}

typedef diffuse_status (*segment_fn)(const df_tokenizer *t, scratch *s, const char *text, size_t n, id_vec *o,
                                     df_error *err);

/* AddedVocabulary::find_matches: splits s[0..n) on the added tokens of one
 * kind, pushing their ids and handing the text between to @gap. */
static diffuse_status split_added(const df_tokenizer *t, scratch *sc, int normalized, const char *s, size_t n,
                                  segment_fn gap, id_vec *o, df_error *err) {
    size_t done = 0, at;
    long i;
    diffuse_status st;
    while ((i = find_added(t, normalized, s, done, n, &at)) >= 0) {
        const added_token *a = &t->added[i];
        size_t start = at, stop = at + a->match_len;
        if (a->lstrip) {
            size_t ns = space_run_before(s, 0, start);
            start = ns > done ? ns : done;
        }
        if (a->rstrip) stop = space_run_after(s, stop, n);
        if (done < start && (st = gap(t, sc, s + done, start - done, o, err))) return st;
        if (id_push(o, a->id)) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        done = stop;
    }
    if (done < n && (st = gap(t, sc, s + done, n - done, o, err))) return st;
    return DIFFUSE_OK;
}

/* Normalized text between added tokens: pre-tokenize and BPE. */
static diffuse_status normalized_gap(const df_tokenizer *t, scratch *sc, const char *s, size_t n, id_vec *o,
                                     df_error *err) {
    uint32_t *c = malloc((n + 1) * sizeof *c);
    unsigned char *bytes = malloc(n + 1);
    diffuse_status st = DIFFUSE_OK;
    if (!c || !bytes) st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    long m = st ? -1 : df_utf8_decode(s, n, c, NULL);
    if (!st && m < 0) st = df_fail(err, DIFFUSE_ERR_INTERNAL, "tokenizer: bad UTF-8 after normalization");
    if (!st) st = clip_split_bpe(t, sc, c, (size_t)m, bytes, o, err);
    free(c);
    free(bytes);
    return st;
}

/* Raw text between non-normalized added tokens: normalize, then split on
 * the normalized added tokens. */
static diffuse_status raw_gap(const df_tokenizer *t, scratch *sc, const char *s, size_t n, id_vec *o,
                              df_error *err) {
    char *norm;
    size_t nn;
    diffuse_status st = df_tok_normalize(s, n, &norm, &nn, err);
    if (st) return st;
    st = split_added(t, sc, 1, norm, nn, normalized_gap, o, err);
    free(norm);
    return st;
}

/* BOS + tokens + EOS of @utf8 into @o. */
static diffuse_status tokenize_all(const df_tokenizer *t, const char *utf8, id_vec *o, df_error *err) {
    size_t n = strlen(utf8), bad = 0;
    uint32_t *tmp = malloc((n + 1) * sizeof *tmp);
    if (!tmp) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    long m = df_utf8_decode(utf8, n, tmp, &bad);
    free(tmp);
    if (m < 0)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "tokenizer: text is not valid UTF-8 (byte %zu: 0x%02x)", bad,
                       (unsigned char)utf8[bad]);
    scratch sc = {0};
    diffuse_status st = DIFFUSE_OK;
    if (id_push(o, t->bos_id)) st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    if (!st) st = split_added(t, &sc, 0, utf8, n, raw_gap, o, err);
    if (!st && id_push(o, t->eos_id)) st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    free(sc.sym);
    free(sc.heap);
    return st;
}

diffuse_status df_tokenize(const df_tokenizer *t, const char *utf8, int32_t *ids, size_t cap, size_t *count,
                           df_error *err) {
    if (!t || !utf8 || !count || (cap > 0 && !ids))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "tokenizer: NULL tokenizer, text, ids or count");
    id_vec o = {0};
    diffuse_status st = tokenize_all(t, utf8, &o, err);
    if (!st) {
        if (cap > 0) memcpy(ids, o.v, (o.n < cap ? o.n : cap) * sizeof *ids);
        *count = o.n;
    }
    free(o.v);
    return st;
}

diffuse_status df_tokenize_padded(const df_tokenizer *t, const char *utf8, size_t max_length, int32_t *ids,
                                  size_t *n_dropped, df_error *err) {
    if (!t || !utf8 || !ids || max_length < 2)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "tokenizer: NULL argument or max_length %zu < 2", max_length);
    id_vec o = {0};
    diffuse_status st = tokenize_all(t, utf8, &o, err);
    if (!st && o.n < max_length && t->pad_id < 0)
        st = df_fail(err, DIFFUSE_ERR_MODEL_CONFIG, "tokenizer: padding needs a pad token and there is none");
    if (!st) {
        size_t keep = o.n > max_length ? max_length : o.n;
        memcpy(ids, o.v, keep * sizeof *ids);
        if (o.n > max_length) ids[max_length - 1] = t->eos_id; /* BOS + first max_length-2 + EOS */
        for (size_t i = keep; i < max_length; i++) ids[i] = t->pad_id;
        if (n_dropped) *n_dropped = o.n > max_length ? o.n - max_length : 0;
    }
    free(o.v);
    return st;
}
