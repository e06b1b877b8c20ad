/*
 * tokenizer_load.c - building a df_tokenizer: the vocabulary and merges
 * (vocab.json + merges.txt, tokenizer.json, or the embedded
 * bpe_simple_vocab_16e6.txt.gz) and the added/special tokens resolved from
 * the config files the way transformers 5.23.0's from_pretrained does.
 */
#include "text/tokenizer_internal.h"
#include "text/unicode.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

extern const unsigned char df_clip_vocab_gz[];
extern const size_t df_clip_vocab_gz_size;

/* ------------------------------------------------------------------------ */
/* Vocabulary and merges                                                     */
/* ------------------------------------------------------------------------ */

/* GPT-2 / CLIP reversible byte -> printable code point map. */
static uint32_t byte_to_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    /* the others get 256, 257, ... in byte order */
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return (uint32_t)(256 + n);
}

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

/* Vocabulary id of token @s (@n bytes), or -1. */
static int32_t vocab_get(const df_tokenizer *t, const char *s, size_t n) {
    if (!t->slots) return -1;
    for (size_t i = fnv1a(s, n) & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        uint32_t e = t->slots[i];
        if (!e) return -1;
        const vocab_entry *v = &t->entries[e - 1];
        if (v->len == n && memcmp(t->pool + v->off, s, n) == 0) return v->id;
    }
}

static diffuse_status vocab_rehash(df_tokenizer *t, size_t want, df_error *err) {
    size_t cap = 1024;
    while (cap < want * 2) cap *= 2;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (vocabulary)");
    free(t->slots);
    t->slots = slots;
    t->slot_mask = cap - 1;
    for (size_t e = 0; e < t->n_entries; e++) {
        size_t i = fnv1a(t->pool + t->entries[e].off, t->entries[e].len) & t->slot_mask;
        while (t->slots[i]) i = (i + 1) & t->slot_mask;
        t->slots[i] = (uint32_t)(e + 1);
    }
    return DIFFUSE_OK;
}

/* Inserts or overwrites (a later duplicate key wins, as a JSON map does). */
static diffuse_status vocab_put(df_tokenizer *t, const char *s, size_t n, int32_t id, df_error *err) {
    if (id < 0) return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: negative id %d for a token", (int)id);
    if (!t->slots || (t->n_entries + 1) * 2 > t->slot_mask + 1) {
        diffuse_status st = vocab_rehash(t, t->n_entries + 1 < 32768 ? 32768 : (t->n_entries + 1) * 2, err);
        if (st) return st;
    }
    size_t i = fnv1a(s, n) & t->slot_mask;
    for (; t->slots[i]; i = (i + 1) & t->slot_mask) {
        vocab_entry *v = &t->entries[t->slots[i] - 1];
        if (v->len == n && memcmp(t->pool + v->off, s, n) == 0) {
            v->id = id;
            if (id > t->max_id) t->max_id = id;
            return DIFFUSE_OK;
        }
    }
    if (t->n_entries == t->entries_cap) {
        size_t cap = t->entries_cap ? t->entries_cap * 2 : 65536;
        vocab_entry *e = realloc(t->entries, cap * sizeof *e);
        if (!e) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (vocabulary)");
        t->entries = e;
        t->entries_cap = cap;
    }
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 20;
        while (cap < t->pool_len + n) cap *= 2;
        char *p = realloc(t->pool, cap);
        if (!p) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (vocabulary)");
        t->pool = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s, n);
    t->entries[t->n_entries] = (vocab_entry){t->pool_len, (uint32_t)n, id};
    t->pool_len += n;
    t->slots[i] = (uint32_t)(++t->n_entries);
    if (id > t->max_id) t->max_id = id;
    return DIFFUSE_OK;
}

/* Merges as tokenizers' BPE builds them: rank = position in the list, a
 * later duplicate pair overwrites an earlier one, and every part and the
 * joined token must be in the vocabulary. @pairs holds 2*n (ptr, len). */
typedef struct str_ref { const char *s; size_t n; } str_ref;

static diffuse_status build_merges(df_tokenizer *t, const str_ref *pairs, size_t n, df_error *err) {
    size_t cap = 1024;
    while (cap < n * 2 + 2) cap *= 2;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (merges)");
    for (size_t i = 0; i < cap; i++) t->merges[i].key = UINT64_MAX;
    t->merge_mask = cap - 1;
    char *joined = NULL;
    size_t joined_cap = 0;
    for (size_t r = 0; r < n; r++) {
        const str_ref *a = &pairs[2 * r], *b = &pairs[2 * r + 1];
        int32_t ia = vocab_get(t, a->s, a->n), ib = vocab_get(t, b->s, b->n);
        if (a->n + b->n > joined_cap) {
            joined_cap = (a->n + b->n) * 2 + 16;
            char *j = realloc(joined, joined_cap);
            if (!j) { free(joined); return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); }
            joined = j;
        }
        memcpy(joined, a->s, a->n);
        memcpy(joined + a->n, b->s, b->n);
        int32_t inew = vocab_get(t, joined, a->n + b->n);
        if (ia < 0 || ib < 0 || inew < 0) {
            diffuse_status st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                                        "tokenizer: merge %zu (\"%.*s %.*s\") uses a token missing from the vocabulary",
                                        r + 1, (int)a->n, a->s, (int)b->n, b->s);
            free(joined);
            return st;
        }
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        size_t i = df_tok_mix64(key) & t->merge_mask;
        while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key) i = (i + 1) & t->merge_mask;
        if (t->merges[i].key == UINT64_MAX) t->n_merges++;
        t->merges[i] = (merge_slot){key, (int32_t)r, inew};
    }
    free(joined);
    return DIFFUSE_OK;
}

/* Byte symbol ids: each byte's code point, alone and with "</w>". */
static void build_byte_symbols(df_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n = df_utf8_encode(byte_to_cp(b), s);
        t->sym_id[b] = vocab_get(t, s, n);
        memcpy(s + n, EOW, EOW_LEN);
        t->sym_end_id[b] = vocab_get(t, s, n + EOW_LEN);
    }
}

void df_tokenizer_free(df_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].match);
    }
    free(t->added);
    free(t->merges);
    free(t->slots);
    free(t->entries);
    free(t->pool);
    free(t);
}

void df_tokenizer_get_info(const df_tokenizer *t, df_tokenizer_info *info) {
    info->bos_id = t->bos_id;
    info->eos_id = t->eos_id;
    info->pad_id = t->pad_id;
    info->unk_id = t->unk_id;
    info->vocab_size = t->n_entries;
    info->n_merges = t->n_merges;
    info->n_added = t->n_added;
    info->model_max_length = t->model_max_length;
}

/* ------------------------------------------------------------------------ */
/* Loading: files, JSON, added tokens                                        */
/* ------------------------------------------------------------------------ */

static diffuse_status read_file(const char *path, char **out, size_t *len, df_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        return df_fail(err, errno == ENOENT ? DIFFUSE_ERR_NOT_FOUND : DIFFUSE_ERR_IO, "tokenizer: cannot open %s: %s",
                       path, strerror(errno));
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        cap *= 2;
        char *b = realloc(buf, cap + 1);
        if (!b) { free(buf); buf = NULL; }
        else buf = b;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory reading %s", path);
    if (bad) { free(buf); return df_fail(err, DIFFUSE_ERR_IO, "tokenizer: error reading %s", path); }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return DIFFUSE_OK;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static diffuse_status parse_json(const char *text, size_t n, const char *what, json_object **out, df_error *err) {
    json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    if (!tok) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    json_object *o = json_tokener_parse_ex(tok, text, (int)n);
    enum json_tokener_error je = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!o || je != json_tokener_success) {
        json_object_put(o);
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s is not valid JSON (%s)", what,
                       json_tokener_error_desc(je));
    }
    *out = o;
    return DIFFUSE_OK;
}

/* Reads and parses @dir/@name; *out = NULL (and OK) when absent and !required. */
static diffuse_status load_json(const char *dir, const char *name, int required, json_object **out, df_error *err) {
    char path[4096];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "tokenizer: path too long: %s", dir);
    if (!required && !file_exists(path)) return DIFFUSE_OK;
    char *text;
    size_t n;
    diffuse_status st = read_file(path, &text, &n, err);
    if (st) return st;
    if (n > 0x7fffffff) { free(text); return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s too large", path); }
    st = parse_json(text, n, path, out, err);
    free(text);
    return st;
}

static diffuse_status vocab_from_json(df_tokenizer *t, json_object *vocab, const char *what, df_error *err) {
    if (!json_object_is_type(vocab, json_type_object))
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s: vocabulary is not a JSON object", what);
    diffuse_status st = vocab_rehash(t, (size_t)json_object_object_length(vocab) + 1, err);
    if (st) return st;
    json_object_object_foreach(vocab, key, val) {
        /* like tokenizers' reader: non-numbers are skipped, ids must be u32 */
        if (!json_object_is_type(val, json_type_int)) continue;
        int64_t id = json_object_get_int64(val);
        if (id < 0 || id > INT32_MAX)
            return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s: id %lld of \"%s\" out of range", what,
                           (long long)id, key);
        st = vocab_put(t, key, strlen(key), (int32_t)id, err);
        if (st) return st;
    }
    return DIFFUSE_OK;
}

/* merges.txt: "#version" lines skipped, every other line exactly "a b". */
static diffuse_status merges_from_text(df_tokenizer *t, char *text, size_t n, const char *what, df_error *err) {
    size_t cap = 1024, count = 0;
    str_ref *pairs = malloc(cap * 2 * sizeof *pairs);
    if (!pairs) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    size_t line_no = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && text[e] != '\n') e++;
        size_t len = e - i;
        if (len > 0 && text[i + len - 1] == '\r') len--; /* BufRead::lines drops \r\n too */
        line_no++;
        const char *line = text + i;
        i = e + 1;
        if (len >= 8 && memcmp(line, "#version", 8) == 0) continue;
        const char *sp = memchr(line, ' ', len);
        if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - line))) {
            free(pairs);
            return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s line %zu is not \"a b\"", what, line_no);
        }
        if (count == cap) {
            cap *= 2;
            str_ref *p = realloc(pairs, cap * 2 * sizeof *p);
            if (!p) { free(pairs); return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); }
            pairs = p;
        }
        pairs[2 * count] = (str_ref){line, (size_t)(sp - line)};
        pairs[2 * count + 1] = (str_ref){sp + 1, len - (size_t)(sp + 1 - line)};
        count++;
    }
    diffuse_status st = build_merges(t, pairs, count, err);
    free(pairs);
    return st;
}

/* tokenizer.json model.merges: ["a b", ...] or [["a", "b"], ...]. */
static diffuse_status merges_from_json(df_tokenizer *t, json_object *arr, const char *what, df_error *err) {
    if (!json_object_is_type(arr, json_type_array))
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s: model.merges is not an array", what);
    size_t n = json_object_array_length(arr);
    str_ref *pairs = malloc((n + 1) * 2 * sizeof *pairs);
    if (!pairs) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    for (size_t r = 0; r < n; r++) {
        json_object *m = json_object_array_get_idx(arr, r);
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if (json_object_is_type(m, json_type_string)) {
            const char *s = json_object_get_string(m);
            size_t len = (size_t)json_object_get_string_len(m);
            const char *sp = memchr(s, ' ', len);
            if (sp && !memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
                a = s; na = (size_t)(sp - s); b = sp + 1; nb = len - na - 1;
            }
        } else if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2) {
            json_object *ja = json_object_array_get_idx(m, 0), *jb = json_object_array_get_idx(m, 1);
            if (json_object_is_type(ja, json_type_string) && json_object_is_type(jb, json_type_string)) {
                a = json_object_get_string(ja); na = (size_t)json_object_get_string_len(ja);
                b = json_object_get_string(jb); nb = (size_t)json_object_get_string_len(jb);
            }
        }
        if (!a) {
            free(pairs);
            return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s: merge %zu is not a pair", what, r + 1);
        }
        pairs[2 * r] = (str_ref){a, na};
        pairs[2 * r + 1] = (str_ref){b, nb};
    }
    diffuse_status st = build_merges(t, pairs, n, err);
    free(pairs);
    return st;
}

/* A token as transformers' config files give it, before ids are assigned. */
typedef struct token_spec {
    const char *content;
    uint8_t normalized, lstrip, rstrip, single_word, special;
    int present;
} token_spec;

static int json_flag(json_object *o, const char *key, int dflt) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_boolean)) return dflt;
    return json_object_get_boolean(v);
}

/* A config value: a string (special, not normalized) or an AddedToken
 * dict (`special_default` where the dict has no "special"; normalized
 * defaults to !special, as AddedToken's constructor does). */
static int token_from_json(json_object *v, int special_default, token_spec *out) {
    memset(out, 0, sizeof *out);
    if (json_object_is_type(v, json_type_string)) {
        out->content = json_object_get_string(v);
        out->special = 1;
        out->present = 1;
        return 1;
    }
    json_object *c;
    if (json_object_is_type(v, json_type_object) && json_object_object_get_ex(v, "content", &c) &&
        json_object_is_type(c, json_type_string)) {
        out->content = json_object_get_string(c);
        out->special = (uint8_t)json_flag(v, "special", special_default);
        out->normalized = (uint8_t)json_flag(v, "normalized", !out->special);
        out->lstrip = (uint8_t)json_flag(v, "lstrip", 0);
        out->rstrip = (uint8_t)json_flag(v, "rstrip", 0);
        out->single_word = (uint8_t)json_flag(v, "single_word", 0);
        out->present = 1;
        return 1;
    }
    return 0;
}

/* Adds (or, for content already added, updates the flags of) one token:
 * tokenizers' AddedVocabulary::add_tokens, where the last flags win. */
static diffuse_status add_token(df_tokenizer *t, const token_spec *s, df_error *err) {
    size_t len = strlen(s->content);
    if (len == 0) return DIFFUSE_OK;
    if (s->single_word)
        return df_fail(err, DIFFUSE_ERR_UNSUPPORTED, "tokenizer: added token \"%s\" has single_word set", s->content);
    added_token *a = NULL;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->added[i].content, s->content, len) == 0) a = &t->added[i];
    if (!a) {
        added_token *arr = realloc(t->added, (t->n_added + 1) * sizeof *arr);
        if (!arr) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        t->added = arr;
        a = &t->added[t->n_added];
        memset(a, 0, sizeof *a);
        a->content = malloc(len + 1);
        if (!a->content) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        memcpy(a->content, s->content, len + 1);
        a->len = len;
        /* id: the vocabulary's, else the next one past vocabulary and added ids */
        a->id = vocab_get(t, s->content, len);
        if (a->id < 0) {
            int32_t next = (int32_t)t->n_entries, max_added = -1;
            for (size_t i = 0; i < t->n_added; i++)
                if (t->added[i].id > max_added) max_added = t->added[i].id;
            if (max_added >= 0 && (max_added >= (int32_t)t->n_entries || t->n_entries == 0)) next = max_added + 1;
            a->id = next;
        }
        t->n_added++;
    }
    a->normalized = s->normalized;
    a->lstrip = s->lstrip;
    a->rstrip = s->rstrip;
    a->special = s->special;
    return DIFFUSE_OK;
}

static int32_t token_id(const df_tokenizer *t, const char *content) {
    size_t len = strlen(content);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->added[i].content, content, len) == 0) return t->added[i].id;
    return vocab_get(t, content, len);
}

static const char *const NAMED_KEYS[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                         "pad_token", "cls_token", "mask_token"};
enum { N_NAMED = 7, K_BOS = 0, K_EOS = 1, K_UNK = 2, K_PAD = 4 };

/*
 * Resolves the added/special tokens and named ids from tokenizer_config.json
 * (@cfg), special_tokens_map.json (@stm) and tokenizer.json (@tj), any may
 * be NULL, as transformers 5.23 from_pretrained + CLIPTokenizer.__init__ do:
 * - with cfg.added_tokens_decoder: those tokens; named tokens from cfg only;
 * - without: named tokens from cfg, overridden by stm; tokens from
 *   tokenizer.json's added_tokens;
 * - CLIPTokenizer defaults bos <|startoftext|>, eos/unk/pad <|endoftext|>;
 * - a named token whose content is one of those tokens takes its flags;
 * - then everything is added in order: tokens (by id), named tokens
 *   (bos, eos, unk, sep, pad, cls, mask), extra special tokens; the last
 *   flags given for one content win.
 */
static diffuse_status resolve_tokens(df_tokenizer *t, json_object *cfg, json_object *stm, json_object *tj,
                                     df_error *err) {
    diffuse_status st;
    json_object *decoder = NULL, *v;
    int modern = cfg && json_object_object_get_ex(cfg, "added_tokens_decoder", &decoder) &&
                 json_object_is_type(decoder, json_type_object);

    /* the decoder tokens, ordered by id */
    token_spec *dec = NULL;
    size_t n_dec = 0;
    int32_t *dec_ids = NULL;
    if (modern) {
        size_t n = (size_t)json_object_object_length(decoder);
        dec = calloc(n + 1, sizeof *dec);
        dec_ids = calloc(n + 1, sizeof *dec_ids);
        if (!dec || !dec_ids) { st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); goto done; }
        json_object_object_foreach(decoder, key, val) {
            if (!token_from_json(val, 0, &dec[n_dec])) {
                st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: added_tokens_decoder[%s] is not a token", key);
                goto done;
            }
            dec_ids[n_dec++] = (int32_t)strtol(key, NULL, 10);
        }
    } else if (tj && json_object_object_get_ex(tj, "added_tokens", &v) && json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        dec = calloc(n + 1, sizeof *dec);
        dec_ids = calloc(n + 1, sizeof *dec_ids);
        if (!dec || !dec_ids) { st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); goto done; }
        for (size_t i = 0; i < n; i++) {
            json_object *o = json_object_array_get_idx(v, i), *jid;
            if (!token_from_json(o, 0, &dec[n_dec])) {
                st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT,
                             "tokenizer: tokenizer.json added_tokens[%zu] is not a token", i);
                goto done;
            }
            dec_ids[n_dec++] = json_object_object_get_ex(o, "id", &jid) ? json_object_get_int(jid) : 0;
        }
    }
    /* sort by id (insertion sort: a handful of tokens) */
    for (size_t i = 1; i < n_dec; i++)
        for (size_t j = i; j > 0 && dec_ids[j - 1] > dec_ids[j]; j--) {
            int32_t ti = dec_ids[j]; dec_ids[j] = dec_ids[j - 1]; dec_ids[j - 1] = ti;
            token_spec ts = dec[j]; dec[j] = dec[j - 1]; dec[j - 1] = ts;
        }

    /* named tokens */
    token_spec named[N_NAMED];
    memset(named, 0, sizeof named);
    static const char *const defaults[N_NAMED] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", NULL,
                                                  "<|endoftext|>", NULL, NULL};
    for (int k = 0; k < N_NAMED; k++) {
        if (defaults[k]) named[k] = (token_spec){.content = defaults[k], .special = 1, .present = 1};
        for (int src = 0; src < 2; src++) {
            json_object *o = src == 0 ? cfg : (modern ? NULL : stm);
            if (!o || !json_object_object_get_ex(o, NAMED_KEYS[k], &v)) continue;
            if (json_object_is_type(v, json_type_null)) { named[k].present = 0; continue; }
            token_spec s;
            if (!token_from_json(v, src == 1, &s)) {
                st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s is neither a string nor a token",
                             NAMED_KEYS[k]);
                goto done;
            }
            s.special = 1; /* named tokens are always special */
            named[k] = s;
        }
        if (named[k].present)
            for (size_t i = 0; i < n_dec; i++)
                if (strcmp(dec[i].content, named[k].content) == 0) named[k] = dec[i];
    }

    /* add: decoder tokens, named tokens not among them, extras */
    for (size_t i = 0; i < n_dec; i++)
        if ((st = add_token(t, &dec[i], err))) goto done;
    for (int k = 0; k < N_NAMED; k++) {
        if (!named[k].present) continue;
        int in_dec = 0;
        for (size_t i = 0; i < n_dec; i++) in_dec |= strcmp(dec[i].content, named[k].content) == 0;
        if (!in_dec && (st = add_token(t, &named[k], err))) goto done;
    }
    static const char *const extra_keys[] = {"extra_special_tokens", "additional_special_tokens"};
    json_object *extras = NULL;
    for (int src = 0; src < 2 && !extras; src++) {
        json_object *o = src == 0 ? (modern ? NULL : stm) : cfg;
        for (int e = 0; o && e < 2 && !extras; e++)
            if (json_object_object_get_ex(o, extra_keys[e], &v) && json_object_is_type(v, json_type_array)) extras = v;
    }
    for (size_t i = 0; extras && i < json_object_array_length(extras); i++) {
        token_spec s;
        if (!token_from_json(json_object_array_get_idx(extras, i), 1, &s)) continue;
        s.special = 1;
        for (size_t j = 0; j < n_dec; j++)
            if (strcmp(dec[j].content, s.content) == 0) s = dec[j];
        if ((st = add_token(t, &s, err))) goto done;
    }

    /* named ids; the BPE's unk is looked up in the vocabulary alone */
    if (!named[K_BOS].present || !named[K_EOS].present) {
        st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: no %s token", named[K_BOS].present ? "eos" : "bos");
        goto done;
    }
    t->bos_id = token_id(t, named[K_BOS].content);
    t->eos_id = token_id(t, named[K_EOS].content);
    t->pad_id = named[K_PAD].present ? token_id(t, named[K_PAD].content) : -1;
    t->unk_id = named[K_UNK].present ? vocab_get(t, named[K_UNK].content, strlen(named[K_UNK].content)) : -1;

    /* what each added token is matched against: its content, or its normalized form */
    for (size_t i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        if (a->normalized) {
            if ((st = df_tok_normalize(a->content, a->len, &a->match, &a->match_len, err))) goto done;
        } else {
            a->match = malloc(a->len + 1);
            if (!a->match) { st = df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); goto done; }
            memcpy(a->match, a->content, a->len + 1);
            a->match_len = a->len;
        }
    }

    /* model_max_length */
    t->model_max_length = 0;
    if (cfg && json_object_object_get_ex(cfg, "model_max_length", &v)) {
        /* transformers' "no limit" (1e30) and other huge values read as 0 */
        if (json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0 &&
            json_object_get_int64(v) <= INT32_MAX)
            t->model_max_length = (size_t)json_object_get_int64(v);
    }
    st = DIFFUSE_OK;
done:
    free(dec);
    free(dec_ids);
    return st;
}

static diffuse_status check_config_files(df_tokenizer *t, json_object *cfg, json_object *stm, json_object *tj,
                                         df_error *err) {
    diffuse_status st = resolve_tokens(t, cfg, stm, tj, err);
    if (st) return st;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id < 0)
            return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: added token without id");
    if (t->bos_id < 0 || t->eos_id < 0)
        return df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: bos/eos tokens have no id");
    return DIFFUSE_OK;
}

static df_tokenizer *tokenizer_new(void) {
    df_tokenizer *t = calloc(1, sizeof *t);
    if (t) t->max_id = -1;
    return t;
}

diffuse_status df_tokenizer_load_dir(const char *dir, df_tokenizer **out, df_error *err) {
    if (out) *out = NULL;
    if (!dir || !out) return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "tokenizer: NULL argument");
    df_tokenizer *t = tokenizer_new();
    if (!t) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    json_object *cfg = NULL, *stm = NULL, *tj = NULL, *vocab = NULL;
    char *merges = NULL;
    char path[4096];
    diffuse_status st;

    if ((st = load_json(dir, "tokenizer_config.json", 0, &cfg, err))) goto fail;
    if ((st = load_json(dir, "special_tokens_map.json", 0, &stm, err))) goto fail;
    if ((st = load_json(dir, "tokenizer.json", 0, &tj, err))) goto fail;
    if (tj) {
        json_object *model, *jv, *jm;
        if (!json_object_object_get_ex(tj, "model", &model) || !json_object_object_get_ex(model, "vocab", &jv) ||
            !json_object_object_get_ex(model, "merges", &jm)) {
            st = df_fail(err, DIFFUSE_ERR_MODEL_FORMAT, "tokenizer: %s/tokenizer.json has no BPE model.vocab/merges",
                         dir);
            goto fail;
        }
        if ((st = vocab_from_json(t, jv, "tokenizer.json", err))) goto fail;
        if ((st = merges_from_json(t, jm, "tokenizer.json", err))) goto fail;
    } else {
        snprintf(path, sizeof path, "%s/vocab.json", dir);
        if (!file_exists(path)) {
            st = df_fail(err, DIFFUSE_ERR_NOT_FOUND, "tokenizer: %s has neither tokenizer.json nor vocab.json", dir);
            goto fail;
        }
        if ((st = load_json(dir, "vocab.json", 1, &vocab, err))) goto fail;
        if ((st = vocab_from_json(t, vocab, path, err))) goto fail;
        size_t n;
        snprintf(path, sizeof path, "%s/merges.txt", dir);
        if ((st = read_file(path, &merges, &n, err))) goto fail;
        if ((st = merges_from_text(t, merges, n, path, err))) goto fail;
    }
    build_byte_symbols(t);
    if ((st = check_config_files(t, cfg, stm, tj, err))) goto fail;
    json_object_put(cfg);
    json_object_put(stm);
    json_object_put(tj);
    json_object_put(vocab);
    free(merges);
    *out = t;
    return DIFFUSE_OK;
fail:
    json_object_put(cfg);
    json_object_put(stm);
    json_object_put(tj);
    json_object_put(vocab);
    free(merges);
    df_tokenizer_free(t);
    return st;
}

/* ------------------------------------------------------------------------ */
/* The built-in vocabulary                                                   */
/* ------------------------------------------------------------------------ */

/* tokenizer_config.json + special_tokens_map.json of the two standard
 * folders (openai/clip-vit-large-patch14 as SD 1.x ships it; SD 2.x's sets
 * pad "!"). tests/fixtures/tokenizer/clip-sd{1,2}/ hold the same files. */
static const char SD1_CONFIG[] =
    "{\"unk_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true, \"__type\": \"AddedToken\"},"
    " \"bos_token\": {\"content\": \"<|startoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true, \"__type\": \"AddedToken\"},"
    " \"eos_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true, \"__type\": \"AddedToken\"},"
    " \"pad_token\": \"<|endoftext|>\", \"add_prefix_space\": false, \"errors\": \"replace\", \"do_lower_case\": true,"
    " \"model_max_length\": 77, \"tokenizer_class\": \"CLIPTokenizer\"}";
static const char SD1_SPECIAL[] =
    "{\"bos_token\": {\"content\": \"<|startoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true},"
    " \"eos_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true},"
    " \"unk_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true},"
    " \"pad_token\": \"<|endoftext|>\"}";
static const char SD2_SPECIAL[] =
    "{\"bos_token\": {\"content\": \"<|startoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true},"
    " \"eos_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true},"
    " \"unk_token\": {\"content\": \"<|endoftext|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
    " \"normalized\": true},"
    " \"pad_token\": \"!\"}";

/* Inflates the embedded gzip into a new NUL-terminated buffer. */
static diffuse_status inflate_builtin(char **out, size_t *len, df_error *err) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return df_fail(err, DIFFUSE_ERR_INTERNAL, "tokenizer: zlib init failed");
    size_t cap = 2u << 20, n = 0;
    char *buf = malloc(cap + 1);
    int zr = Z_OK;
    zs.next_in = (Bytef *)df_clip_vocab_gz;
    zs.avail_in = (uInt)df_clip_vocab_gz_size;
    while (buf) {
        zs.next_out = (Bytef *)buf + n;
        zs.avail_out = (uInt)(cap - n);
        zr = inflate(&zs, Z_NO_FLUSH);
        n = cap - zs.avail_out;
        if (zr == Z_STREAM_END || (zr != Z_OK && zr != Z_BUF_ERROR)) break;
        if (zs.avail_out == 0) {
            cap *= 2;
            char *b = realloc(buf, cap + 1);
            if (!b) { free(buf); buf = NULL; }
            else buf = b;
        } else if (zs.avail_in == 0) {
            break; /* truncated stream */
        }
    }
    inflateEnd(&zs);
    if (!buf) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory inflating the vocabulary");
    if (zr != Z_STREAM_END) {
        free(buf);
        return df_fail(err, DIFFUSE_ERR_INTERNAL, "tokenizer: embedded vocabulary is corrupt (zlib %d)", zr);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return DIFFUSE_OK;
}

/* The vocabulary as OpenAI's simple_tokenizer.py builds it from the file. */
enum { CLIP_N_MERGES = 49152 - 256 - 2, CLIP_VOCAB = 49408 };

static diffuse_status build_builtin_vocab(df_tokenizer *t, char *text, size_t n, df_error *err) {
    diffuse_status st = vocab_rehash(t, CLIP_VOCAB, err);
    if (st) return st;
    /* byte symbols in bytes_to_unicode's order: printable ranges, then the rest */
    int order[256], k = 0;
    for (int b = 0; b < 256; b++)
        if (byte_to_cp(b) == (uint32_t)b) order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (byte_to_cp(b) != (uint32_t)b) order[k++] = b;
    int32_t id = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 256; i++) {
            char s[8];
            size_t len = df_utf8_encode(byte_to_cp(order[i]), s);
            if (pass) { memcpy(s + len, EOW, EOW_LEN); len += EOW_LEN; }
            if ((st = vocab_put(t, s, len, id++, err))) return st;
        }
    /* merges: lines 1 .. CLIP_N_MERGES after the header, "a b" */
    str_ref *pairs = malloc(CLIP_N_MERGES * 2 * sizeof *pairs);
    if (!pairs) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    size_t pos = 0, line = 0, count = 0;
    char *joined = malloc(256);
    if (!joined) { free(pairs); return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory"); }
    while (pos < n && count < CLIP_N_MERGES) {
        size_t e = pos;
        while (e < n && text[e] != '\n') e++;
        if (line++ > 0) {
            const char *l = text + pos, *sp = memchr(l, ' ', e - pos);
            if (!sp || (size_t)(e - pos) > 250) break;
            pairs[2 * count] = (str_ref){l, (size_t)(sp - l)};
            pairs[2 * count + 1] = (str_ref){sp + 1, (size_t)(text + e - sp - 1)};
            memcpy(joined, l, (size_t)(sp - l));
            memcpy(joined + (sp - l), sp + 1, (size_t)(text + e - sp - 1));
            if ((st = vocab_put(t, joined, (size_t)(e - pos - 1), id++, err))) break;
            count++;
        }
        pos = e + 1;
    }
    free(joined);
    if (!st && count != CLIP_N_MERGES)
        st = df_fail(err, DIFFUSE_ERR_INTERNAL, "tokenizer: embedded vocabulary has %zu merges, expected %d", count,
                     CLIP_N_MERGES);
    if (!st) st = vocab_put(t, "<|startoftext|>", 15, id++, err);
    if (!st) st = vocab_put(t, "<|endoftext|>", 13, id++, err);
    if (!st && t->n_entries != CLIP_VOCAB)
        st = df_fail(err, DIFFUSE_ERR_INTERNAL, "tokenizer: embedded vocabulary has %zu tokens, expected %d",
                     t->n_entries, CLIP_VOCAB);
    if (!st) st = build_merges(t, pairs, count, err);
    free(pairs);
    return st;
}

diffuse_status df_tokenizer_load_builtin(df_clip_flavor flavor, df_tokenizer **out, df_error *err) {
    if (out) *out = NULL;
    if (!out || (flavor != DF_CLIP_SD1 && flavor != DF_CLIP_SD2))
        return df_fail(err, DIFFUSE_ERR_INVALID_ARGUMENT, "tokenizer: NULL out or unknown flavor %d", (int)flavor);
    df_tokenizer *t = tokenizer_new();
    if (!t) return df_fail(err, DIFFUSE_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    char *text = NULL;
    size_t n = 0;
    json_object *cfg = NULL, *stm = NULL;
    diffuse_status st = inflate_builtin(&text, &n, err);
    if (!st) st = build_builtin_vocab(t, text, n, err);
    if (!st) build_byte_symbols(t);
    if (!st) st = parse_json(SD1_CONFIG, sizeof SD1_CONFIG - 1, "built-in tokenizer_config.json", &cfg, err);
    if (!st) {
        const char *sp = flavor == DF_CLIP_SD1 ? SD1_SPECIAL : SD2_SPECIAL;
        st = parse_json(sp, strlen(sp), "built-in special_tokens_map.json", &stm, err);
    }
    if (!st) st = check_config_files(t, cfg, stm, NULL, err);
    free(text);
    json_object_put(cfg);
    json_object_put(stm);
    if (st) { df_tokenizer_free(t); return st; }
    *out = t;
    return DIFFUSE_OK;
}
