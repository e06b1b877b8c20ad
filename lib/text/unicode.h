/*
 * unicode.h - the Unicode steps of the CLIP tokenizer: strict UTF-8
 * decoding, NFC, per-character lowercasing and the character classes of
 * its split pattern. Each follows what the reference (Hugging Face
 * tokenizers) does, in the Unicode version it uses (see unicode_tables.c).
 */
#ifndef DF_TEXT_UNICODE_H
#define DF_TEXT_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* \p{L}, \p{N} and \s of the split pattern. */
int df_uc_is_letter(uint32_t cp);
int df_uc_is_number(uint32_t cp);
int df_uc_is_space(uint32_t cp);

/* Writes the full lowercase mapping of @cp (1 to 3 code points) to @out and
 * returns how many. Context-free, like Rust's char::to_lowercase. */
size_t df_uc_lower(uint32_t cp, uint32_t out[3]);

/* Decodes @n bytes of strict UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF) into @out (room for @n code points). Returns the number of code
 * points, or -1 and the offset of the first bad byte in *@bad_at. */
long df_utf8_decode(const char *s, size_t n, uint32_t *out, size_t *bad_at);

/* Encodes @cp as UTF-8 into @out (4 bytes of room); returns the length. */
size_t df_utf8_encode(uint32_t cp, char *out);

/* The most code points NFC of @n code points can take before composition:
 * the buffer size df_uc_nfc needs for @work. */
size_t df_uc_nfd_bound(size_t n);

/* NFC of @in[0..n) into @out (room for df_uc_nfd_bound(n)); returns the
 * output length. */
size_t df_uc_nfc(const uint32_t *in, size_t n, uint32_t *out);

#endif /* DF_TEXT_UNICODE_H */
