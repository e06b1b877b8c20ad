#!/usr/bin/env python3
"""Writes lib/text/unicode_tables.c: the character data the CLIP tokenizer
needs (regex classes \\p{L} \\p{N} \\s, lowercase mappings, NFC data), each in
the Unicode version that the pinned reference (tokenizers 0.23.3 under
transformers 5.23.0) actually uses -- they differ per component:

  \\p{L}, \\p{N}  Oniguruma's tables = Unicode 16.0.0 General_Category, taken
                from unicodedata2==16.0.0 (pip install unicodedata2==16.0.0).
  \\s            Oniguruma's \\s = the White_Space property (25 code points).
  lowercase     Rust's char::to_lowercase (full mappings, no context) =
                Unicode 17.0; read from the reference's Lowercase normalizer
                for every code point, and checked against Python's str.lower()
                wherever this Python's own tables know the character.
  NFC           the unicode-normalization-alignments crate, whose data is
                Unicode 9.0: combining classes and canonical decompositions
                from this Python's unicodedata, kept only where the
                reference's NFD agrees (it drops what was added after 9.0).

Every table is checked against the reference for all code points before it
is written. Needs the reference venv (scripts/make_tokenizer_fixtures.py
names it) plus unicodedata2==16.0.0. Usage: gen_unicode_tables.py [OUT.c]
"""
import os
import sys
import unicodedata

import tokenizers
import unicodedata2
from tokenizers import Regex, normalizers, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "lib", "text", "unicode_tables.c")
CPS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
WHITE_SPACE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) + \
    [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]


def ref_class(pattern):
    """Code points the reference's regex engine puts in a one-char class."""
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
    out = set()
    for i in range(0, len(CPS), 8192):
        text = "".join(chr(c) for c in CPS[i:i + 8192])
        for piece, _ in split.pre_tokenize_str(text):
            out.update(ord(ch) for ch in piece)
    return out


def ranges(cps):
    """Sorted code points -> [(first, last)] runs."""
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def lower_runs(single):
    """{cp: lower} -> [(start, count, stride, delta)] runs of equal delta at stride 1 or 2."""
    items = sorted(single.items())
    runs, i = [], 0
    while i < len(items):
        c, lo = items[i]
        delta = lo - c
        best = (1, 1)
        for stride in (1, 2):
            n = 1
            while (i + n < len(items) and items[i + n][0] == c + n * stride
                   and items[i + n][1] - items[i + n][0] == delta):
                n += 1
            if n > best[0]:
                best = (n, stride)
        runs.append((c, best[0], best[1], delta))
        i += best[0]
    return runs


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else OUT
    assert unicodedata2.unidata_version == "16.0.0", unicodedata2.unidata_version
    lower_n = normalizers.Lowercase()
    nfd_n = normalizers.NFD()
    nfc_n = normalizers.NFC()

    # \p{L}, \p{N}, \s
    letters = {c for c in CPS if unicodedata2.category(chr(c)).startswith("L")}
    numbers = {c for c in CPS if unicodedata2.category(chr(c)).startswith("N")}
    assert letters == ref_class(r"\p{L}"), "reference \\p{L} is not Unicode 16.0"
    assert numbers == ref_class(r"\p{N}"), "reference \\p{N} is not Unicode 16.0"
    assert set(WHITE_SPACE) == ref_class(r"\s"), "reference \\s is not White_Space"

    # lowercase, per code point (the reference maps char by char: no final sigma)
    single, multi = {}, {}
    for c in CPS:
        lo = lower_n.normalize_str(chr(c))
        if unicodedata.category(chr(c)) != "Cn":
            assert lo == chr(c).lower(), hex(c)
        if lo == chr(c):
            continue
        if len(lo) == 1:
            single[c] = ord(lo)
        else:
            assert len(lo) <= 3
            multi[c] = [ord(x) for x in lo]

    # NFC data: this Python's UCD restricted to what the reference agrees with
    def is_nonstarter_ref(c):
        return (nfd_n.normalize_str(chr(c) + "\u0334") == "\u0334" + chr(c)
                or nfd_n.normalize_str("\u0301" + chr(c)) == chr(c) + "\u0301")
    ccc = {}
    for c in CPS:
        k = unicodedata.combining(chr(c))
        if k and is_nonstarter_ref(c):
            ccc[c] = k
    decomp = {}
    for c in CPS:
        d = unicodedata.decomposition(chr(c))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        if nfd_n.normalize_str(chr(c)) != unicodedata.normalize("NFD", chr(c)):
            continue  # the reference (Unicode 9.0) lacks this decomposition
        assert 1 <= len(parts) <= 2
        decomp[c] = parts
    comp = {}
    for c, parts in decomp.items():
        if len(parts) == 2 and ccc.get(parts[0], 0) == 0 and unicodedata.normalize("NFC", chr(c)) == chr(c):
            comp[tuple(parts)] = c
    # the reference leaves every code point without a kept decomposition alone,
    # and knows no combining class that this Python lacks
    for c in CPS:
        if c not in decomp and not 0xAC00 <= c <= 0xD7A3:
            assert nfd_n.normalize_str(chr(c)) == chr(c), hex(c)
        if c not in ccc and c not in decomp:
            assert not is_nonstarter_ref(c), hex(c)
    # every kept composite recomposes in the reference
    for (a, b), c in comp.items():
        assert nfc_n.normalize_str(nfd_n.normalize_str(chr(c))) == chr(c), hex(c)

    letter_r, number_r = ranges(letters), ranges(numbers)
    ccc_r = []
    for c in sorted(ccc):
        if ccc_r and ccc_r[-1][1] == c - 1 and ccc_r[-1][2] == ccc[c]:
            ccc_r[-1][1] = c
        else:
            ccc_r.append([c, c, ccc[c]])
    low_r = lower_runs(single)

    L = []
    w = L.append
    w("/*")
    w(" * unicode_tables.c - character data for the CLIP tokenizer, generated by")
    w(" * scripts/gen_unicode_tables.py; do not edit. Each table is in the Unicode")
    w(" * version the reference (tokenizers %s) uses for that step:" % tokenizers.__version__)
    w(" * letters/numbers Unicode 16.0.0 (Oniguruma), lowercase Unicode 17.0 (Rust")
    w(" * char::to_lowercase), NFC data Unicode 9.0 (unicode-normalization-alignments).")
    w(" */")
    w('#include "unicode_tables.h"')
    w("")

    def emit_ranges(name, rs):
        w("const df_uc_range %s[] = {" % name)
        for i in range(0, len(rs), 4):
            w("    " + " ".join("{0x%X, 0x%X}," % (a, b) for a, b in rs[i:i + 4]))
        w("};")
        w("const size_t %s_count = %d;" % (name, len(rs)))
        w("")
    emit_ranges("df_uc_letter", letter_r)
    emit_ranges("df_uc_number", number_r)
    w("const uint32_t df_uc_space[] = {" + ", ".join("0x%X" % c for c in WHITE_SPACE) + "};")
    w("const size_t df_uc_space_count = %d;" % len(WHITE_SPACE))
    w("")
    w("/* lowercase: code points start + i*stride (i < count) map to cp + delta */")
    w("const df_uc_case_run df_uc_lower_runs[] = {")
    for i in range(0, len(low_r), 3):
        w("    " + " ".join("{0x%X, %d, %d, %d}," % r for r in low_r[i:i + 3]))
    w("};")
    w("const size_t df_uc_lower_runs_count = %d;" % len(low_r))
    w("")
    w("/* lowercase mappings to more than one code point */")
    w("const df_uc_multi df_uc_lower_multi[] = {")
    for c in sorted(multi):
        m = multi[c] + [0] * (3 - len(multi[c]))
        w("    {0x%X, %d, {0x%X, 0x%X, 0x%X}}," % (c, len(multi[c]), m[0], m[1], m[2]))
    w("};")
    w("const size_t df_uc_lower_multi_count = %d;" % len(multi))
    w("")
    w("/* canonical combining class runs {first, last, ccc} */")
    w("const df_uc_ccc_run df_uc_ccc[] = {")
    for i in range(0, len(ccc_r), 4):
        w("    " + " ".join("{0x%X, 0x%X, %d}," % tuple(r) for r in ccc_r[i:i + 4]))
    w("};")
    w("const size_t df_uc_ccc_count = %d;" % len(ccc_r))
    w("")
    w("/* one-level canonical decompositions {cp, first, second or 0}, by cp (Hangul is algorithmic) */")
    w("const df_uc_decomp df_uc_decomp_map[] = {")
    ds = sorted(decomp.items())
    for i in range(0, len(ds), 3):
        w("    " + " ".join("{0x%X, 0x%X, 0x%X}," % (c, p[0], p[1] if len(p) > 1 else 0) for c, p in ds[i:i + 3]))
    w("};")
    w("const size_t df_uc_decomp_map_count = %d;" % len(ds))
    w("")
    w("/* primary composites {first, second, composite}, by (first, second) */")
    w("const df_uc_decomp df_uc_comp_map[] = {")
    cs = sorted(comp.items())
    for i in range(0, len(cs), 3):
        w("    " + " ".join("{0x%X, 0x%X, 0x%X}," % (a, b, c) for (a, b), c in cs[i:i + 3]))
    w("};")
    w("const size_t df_uc_comp_map_count = %d;" % len(cs))
    with open(out_path, "w", encoding="ascii") as f:
        f.write("\n".join(L) + "\n")
    print("wrote %s: %d letter ranges, %d number ranges, %d lowercase runs (+%d multi), "
          "%d ccc runs, %d decompositions, %d compositions" % (
              out_path, len(letter_r), len(number_r), len(low_r), len(multi), len(ccc_r), len(ds), len(cs)))


if __name__ == "__main__":
    main()
