/*
 * tokenizer.h - the CLIP byte-level BPE tokenizer, token for token what
 * transformers 5.23.0's CLIPTokenizer (tokenizers 0.23.3 backend) gives:
 * added/special tokens split out, NFC + whitespace runs to one space +
 * lowercase, CLIP's split pattern, byte-level BPE with `</w>` word ends,
 * then <|startoftext|> ... <|endoftext|>. A tokenizer is immutable after
 * load: any number of threads may use one at once.
 */
#ifndef DF_TEXT_TOKENIZER_H
#define DF_TEXT_TOKENIZER_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

typedef struct df_tokenizer df_tokenizer;

/* The standard configurations of the built-in vocabulary: they differ only
 * in the tokenizer_config.json / special_tokens_map.json that go with it. */
typedef enum df_clip_flavor {
    DF_CLIP_SD1 = 1, /* openai/clip-vit-large-patch14: pads with <|endoftext|> (49407) */
    DF_CLIP_SD2 = 2  /* SD 2.x folders: pad token "!" (id 0), which is then also a
                      * special token, so every "!" in a prompt becomes id 0 */
} df_clip_flavor;

/* What a loaded tokenizer resolved from its files. */
typedef struct df_tokenizer_info {
    int32_t bos_id;            /* <|startoftext|>: 49406 for CLIP */
    int32_t eos_id;            /* <|endoftext|>: 49407 */
    int32_t pad_id;            /* 49407 (SD1) or 0 (SD2) */
    int32_t unk_id;            /* -1 when the unk token is not in the vocabulary */
    size_t vocab_size;         /* entries of the BPE vocabulary (49408 for CLIP) */
    size_t n_merges;           /* 48894 for CLIP */
    size_t n_added;            /* added/special tokens split out before BPE */
    size_t model_max_length;   /* tokenizer_config.json's; 0 when it has none */
} df_tokenizer_info;

/*
 * Loads the tokenizer of a diffusers `tokenizer/` folder as transformers'
 * CLIPTokenizer.from_pretrained does: the vocabulary from tokenizer.json
 * (model.vocab, model.merges) when present, else vocab.json + merges.txt;
 * added and special tokens from tokenizer_config.json (added_tokens_decoder,
 * bos/eos/unk/sep/pad/cls/mask_token, additional_special_tokens) and, for
 * folders without added_tokens_decoder, special_tokens_map.json over it and
 * tokenizer.json's added_tokens. Where one content is given twice the later
 * flags win, in that order. Returns DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT
 * (NULL dir/out); DIFFUSE_ERR_NOT_FOUND (no vocabulary files);
 * DIFFUSE_ERR_IO; DIFFUSE_ERR_MODEL_FORMAT (malformed JSON or merges, merge
 * of tokens missing from the vocabulary, unknown special token);
 * DIFFUSE_ERR_UNSUPPORTED (an added token with single_word set);
 * DIFFUSE_ERR_OUT_OF_MEMORY. *out is NULL on failure.
 */
diffuse_status df_tokenizer_load_dir(const char *dir, df_tokenizer **out, df_error *err);

/*
 * Builds the tokenizer from the CLIP vocabulary embedded in the library
 * (bpe_simple_vocab_16e6.txt.gz, inflated here into the new object) with
 * the configuration files of @flavor. Same vocabulary and ids as the
 * vocab.json/merges.txt of openai/clip-vit-large-patch14.
 * Returns DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL out, unknown
 * flavor); DIFFUSE_ERR_INTERNAL (embedded data corrupt);
 * DIFFUSE_ERR_OUT_OF_MEMORY.
 */
diffuse_status df_tokenizer_load_builtin(df_clip_flavor flavor, df_tokenizer **out, df_error *err);

/* Frees a tokenizer. Accepts NULL. */
void df_tokenizer_free(df_tokenizer *t);

/* Fills @info (t and info non-NULL). */
void df_tokenizer_get_info(const df_tokenizer *t, df_tokenizer_info *info);

/*
 * Tokenizes NUL-terminated UTF-8 @utf8 into BOS + tokens + EOS, untruncated
 * (what `tokenizer(text).input_ids` gives). *count receives the number of
 * ids; only the first min(cap, *count) are written to @ids (NULL when cap
 * is 0). "" gives [BOS, EOS].
 * Returns DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL t, utf8 or count;
 * @utf8 not valid UTF-8 -- overlong forms, surrogates, values past
 * U+10FFFF, truncated sequences -- the message names the byte offset);
 * DIFFUSE_ERR_MODEL_CONFIG (a character needs the unk token and the
 * vocabulary has none); DIFFUSE_ERR_OUT_OF_MEMORY.
 */
diffuse_status df_tokenize(const df_tokenizer *t, const char *utf8, int32_t *ids, size_t cap, size_t *count,
                           df_error *err);

/*
 * The ids a diffusers pipeline feeds the text encoder: `tokenizer(text,
 * padding="max_length", max_length=max_length, truncation=True)`. Writes
 * exactly @max_length ids: BOS + the first max_length-2 tokens + EOS, then
 * the pad id. *n_dropped (may be NULL) receives how many tokens truncation
 * removed (0 when the prompt fits). Same errors as df_tokenize, and
 * DIFFUSE_ERR_INVALID_ARGUMENT for NULL ids or max_length < 2.
 */
diffuse_status df_tokenize_padded(const df_tokenizer *t, const char *utf8, size_t max_length, int32_t *ids,
                                  size_t *n_dropped, df_error *err);

#endif /* DF_TEXT_TOKENIZER_H */
