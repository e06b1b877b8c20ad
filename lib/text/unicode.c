/*
 * unicode.c - strict UTF-8 decoding, NFC, lowercase and character classes
 * for the CLIP tokenizer, over the generated tables in unicode_tables.c.
 * NFC is the textbook algorithm (UAX #15): full canonical decomposition,
 * canonical ordering by combining class, canonical composition, with
 * Hangul syllables handled algorithmically.
 */
#include "text/unicode.h"
#include "text/unicode_tables.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* Character classes and lowercase                                           */
/* ------------------------------------------------------------------------ */

static int in_ranges(const df_uc_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].first) hi = mid;
        else if (cp > r[mid].last) lo = mid + 1;
        else return 1;
    }
    return 0;
}

int df_uc_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return in_ranges(df_uc_letter, df_uc_letter_count, cp);
}

int df_uc_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return in_ranges(df_uc_number, df_uc_number_count, cp);
}

int df_uc_is_space(uint32_t cp) {
    for (size_t i = 0; i < df_uc_space_count; i++)
        if (df_uc_space[i] == cp) return 1;
    return 0;
}

size_t df_uc_lower(uint32_t cp, uint32_t out[3]) {
    if (cp < 0x80) {
        out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
        return 1;
    }
    for (size_t i = 0; i < df_uc_lower_multi_count; i++) {
        if (df_uc_lower_multi[i].cp == cp) {
            for (int32_t k = 0; k < df_uc_lower_multi[i].n; k++) out[k] = df_uc_lower_multi[i].to[k];
            return (size_t)df_uc_lower_multi[i].n;
        }
    }
    /* last run starting at or before cp */
    size_t lo = 0, hi = df_uc_lower_runs_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (df_uc_lower_runs[mid].start <= cp) lo = mid + 1;
        else hi = mid;
    }
    out[0] = cp;
    if (lo > 0) {
        const df_uc_case_run *r = &df_uc_lower_runs[lo - 1];
        uint32_t off = cp - r->start;
        if (off % (uint32_t)r->stride == 0 && off / (uint32_t)r->stride < (uint32_t)r->count)
            out[0] = (uint32_t)((int64_t)cp + r->delta);
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */
/* ------------------------------------------------------------------------ */

long df_utf8_decode(const char *s, size_t n, uint32_t *out, size_t *bad_at) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    long k = 0;
    while (i < n) {
        uint32_t c = p[i];
        size_t len;
        uint32_t min;
        if (c < 0x80) { out[k++] = c; i++; continue; }
        else if ((c & 0xE0) == 0xC0) { len = 2; c &= 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; c &= 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; c &= 0x07; min = 0x10000; }
        else goto bad;
        if (n - i < len) goto bad;
        for (size_t j = 1; j < len; j++) {
            if ((p[i + j] & 0xC0) != 0x80) goto bad;
            c = (c << 6) | (p[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) goto bad;
        out[k++] = c;
        i += len;
    }
    return k;
bad:
    if (bad_at) *bad_at = i;
    return -1;
}

size_t df_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------ */
/* NFC                                                                       */
/* ------------------------------------------------------------------------ */

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7,
       LCOUNT = 19, VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static uint8_t ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = df_uc_ccc_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < df_uc_ccc[mid].first) hi = mid;
        else if (cp > df_uc_ccc[mid].last) lo = mid + 1;
        else return df_uc_ccc[mid].ccc;
    }
    return 0;
}

static const df_uc_decomp *decomp_of(uint32_t cp) {
    if (cp < 0xC0) return NULL;
    size_t lo = 0, hi = df_uc_decomp_map_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < df_uc_decomp_map[mid].x) hi = mid;
        else if (cp > df_uc_decomp_map[mid].x) lo = mid + 1;
        else return &df_uc_decomp_map[mid];
    }
    return NULL;
}

/* Appends the full canonical decomposition of @cp at out[*k]. */
static void decompose(uint32_t cp, uint32_t *out, size_t *k) {
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t s = cp - SBASE;
        out[(*k)++] = LBASE + s / NCOUNT;
        out[(*k)++] = VBASE + (s % NCOUNT) / TCOUNT;
        if (s % TCOUNT) out[(*k)++] = TBASE + s % TCOUNT;
        return;
    }
    const df_uc_decomp *d = decomp_of(cp);
    if (!d) { out[(*k)++] = cp; return; }
    decompose(d->y, out, k);
    if (d->z) decompose(d->z, out, k);
}

/* The primary composite of (@a, @b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = df_uc_comp_map_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const df_uc_decomp *e = &df_uc_comp_map[mid];
        if (a < e->x || (a == e->x && b < e->y)) hi = mid;
        else if (a > e->x || b > e->y) lo = mid + 1;
        else return e->z;
    }
    return 0;
}

size_t df_uc_nfd_bound(size_t n) { return n * 4; }

size_t df_uc_nfc(const uint32_t *in, size_t n, uint32_t *out) {
    /* 1. full canonical decomposition */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) decompose(in[i], out, &k);
    /* 2. canonical ordering: stable insertion sort of each run of non-starters */
    for (size_t i = 1; i < k; i++) {
        uint8_t c = ccc_of(out[i]);
        if (c == 0) continue;
        size_t j = i;
        uint32_t cp = out[i];
        while (j > 0 && ccc_of(out[j - 1]) > c) { out[j] = out[j - 1]; j--; }
        out[j] = cp;
    }
    /* 3. canonical composition, in place */
    if (k == 0) return 0;
    size_t starter = 0, w = 1;       /* out[starter] is the last starter kept */
    int have_starter = ccc_of(out[0]) == 0;
    uint8_t last_ccc = have_starter ? 0 : ccc_of(out[0]);
    for (size_t i = 1; i < k; i++) {
        uint32_t cp = out[i];
        uint8_t c = ccc_of(cp);
        /* blocked unless nothing stands between, or what does has a lower class */
        int adjacent = (w == starter + 1);
        if (have_starter && (adjacent || (last_ccc != 0 && last_ccc < c))) {
            uint32_t comp = compose(out[starter], cp);
            if (comp) { out[starter] = comp; continue; }
        }
        if (c == 0) { starter = w; have_starter = 1; last_ccc = 0; }
        else last_ccc = c;
        out[w++] = cp;
    }
    return w;
}
