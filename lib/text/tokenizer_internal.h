/*
 * tokenizer_internal.h - the inside of a df_tokenizer, shared by
 * tokenizer_load.c (which builds one from files or the embedded vocabulary)
 * and tokenizer.c (which tokenizes with it). Nothing outside lib/text/
 * includes this.
 */
#ifndef DF_TEXT_TOKENIZER_INTERNAL_H
#define DF_TEXT_TOKENIZER_INTERNAL_H

#include "text/tokenizer.h"

#define EOW "</w>"      /* BPE end_of_word_suffix CLIPTokenizer sets */
#define EOW_LEN 4

/* An added token: split out of the text before BPE and mapped to one id. */
typedef struct added_token {
    char *content;   /* as written in the config */
    size_t len;
    char *match;     /* what is searched: content, or its normalized form */
    size_t match_len;
    int32_t id;
    uint8_t normalized, lstrip, rstrip, single_word, special;
} added_token;

/* vocabulary entry: token bytes at pool + off */
typedef struct vocab_entry { size_t off; uint32_t len; int32_t id; } vocab_entry;

/* merge (a, b) -> (rank, new id); key UINT64_MAX marks an empty slot */
typedef struct merge_slot { uint64_t key; int32_t rank; int32_t new_id; } merge_slot;

struct df_tokenizer {
    /* vocabulary: open-addressing hash of entries */
    char *pool;
    size_t pool_len, pool_cap;
    vocab_entry *entries;
    size_t n_entries, entries_cap;
    uint32_t *slots; /* entry index + 1; 0 = empty */
    size_t slot_mask;
    int32_t max_id;

    merge_slot *merges;
    size_t merge_mask, n_merges;

    int32_t sym_id[256];     /* id of byte b's symbol, -1 if absent */
    int32_t sym_end_id[256]; /* id of byte b's symbol + "</w>" */

    added_token *added;
    size_t n_added;

    int32_t bos_id, eos_id, pad_id, unk_id;
    size_t model_max_length;
};

static inline uint64_t df_tok_mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

/* The merge of the pair (a, b), or NULL. */
static inline const merge_slot *df_merge_get(const df_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = df_tok_mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        if (t->merges[i].key == key) return &t->merges[i];
        if (t->merges[i].key == UINT64_MAX) return NULL;
    }
}

/* The CLIPTokenizer normalizer (NFC, whitespace runs -> " ", lowercase) of
 * valid UTF-8 @s[0..n) into a new NUL-terminated string. Returns
 * DIFFUSE_OK, DIFFUSE_ERR_MODEL_FORMAT (invalid UTF-8) or
 * DIFFUSE_ERR_OUT_OF_MEMORY. */
diffuse_status df_tok_normalize(const char *s, size_t n, char **out, size_t *out_len, df_error *err);

#endif /* DF_TEXT_TOKENIZER_INTERNAL_H */
