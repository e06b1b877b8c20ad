#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.jsonl: the prompts the tokenizer
test checks against the reference, one JSON string per line, UTF-8 with
control characters escaped (no \\uD8xx surrogate escapes: json-c 0.16
decodes some of them to U+FFFD).

Deterministic (seeded): realistic image prompts and negative prompts with
A1111/ComfyUI syntax, numbers, accents in NFC and NFD, CJK, emoji
sequences, case mappings beyond ASCII, exotic whitespace, long prompts,
literal special tokens, contractions, control characters, and a sweep
over every code point whose NFC, lowercase or character class is not
trivial, including the characters newer than this Python's Unicode (found
by asking the reference, so run it in the reference venv). No prompt
contains NUL (the C API takes NUL-terminated text).
Usage: make_prompt_corpus.py [OUT]
"""
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer", "corpus.jsonl")
SEED = 20240917

SUBJECTS = [
    "a cat", "an astronaut riding a horse", "a portrait of an old fisherman", "a cyberpunk city at night",
    "a bowl of ramen", "a medieval castle on a cliff", "a red fox in the snow", "a lighthouse in a storm",
    "a cozy cabin in the woods", "a samurai warrior", "a steampunk airship", "a field of sunflowers",
    "a dragon sleeping on gold", "a girl with a pearl earring", "an owl wearing glasses", "a robot reading a book",
    "a vintage car on route 66", "a waterfall in the jungle", "a bustling Tokyo street", "a corgi astronaut",
    "the Eiffel Tower at sunset", "a cup of coffee with latte art", "an ancient library", "a knight in shining armor",
    "a koi pond", "a mountain landscape", "a futuristic sports car", "a witch's cottage", "a jellyfish",
    "a polar bear on an iceberg", "Mount Fuji", "a street market in Marrakech", "a still life with fruit",
    "an underwater city", "a hummingbird", "a wizard casting a spell", "a treehouse village", "a desert oasis",
]
STYLES = [
    "oil painting", "watercolor", "digital art", "concept art", "photorealistic", "studio ghibli style",
    "unreal engine 5", "octane render", "pencil sketch", "ukiyo-e", "art nouveau", "low poly", "pixel art",
    "cinematic", "35mm film photo", "isometric", "vaporwave", "baroque", "impressionism", "anime screencap",
    "matte painting", "trending on artstation", "by Greg Rutkowski", "by Alphonse Mucha", "by Hokusai",
    "in the style of Van Gogh", "by Zdzisław Beksiński", "by Moebius", "by Hayao Miyazaki", "by Beeple",
]
DETAILS = [
    "highly detailed", "intricate", "sharp focus", "volumetric lighting", "golden hour", "soft light",
    "dramatic lighting", "bokeh", "8k", "4K UHD", "HDR", "wide angle", "macro", "f/1.8", "85mm lens",
    "depth of field", "rim light", "god rays", "hyperrealistic", "award winning", "masterpiece",
    "best quality", "ultra-detailed", "smooth", "elegant", "centered", "symmetrical", "vibrant colors",
    "muted palette", "film grain", "ray tracing", "subsurface scattering", "RTX on", "DSLR", "Canon EOS R5",
]
NEGATIVE = [
    "lowres", "bad anatomy", "bad hands", "text", "error", "missing fingers", "extra digit", "fewer digits",
    "cropped", "worst quality", "low quality", "normal quality", "jpeg artifacts", "signature", "watermark",
    "username", "blurry", "deformed", "disfigured", "mutated", "ugly", "duplicate", "morbid", "out of frame",
    "extra limbs", "poorly drawn face", "NSFW", "(worst quality:1.4)", "(low quality:1.4)", "EasyNegative",
]
WORDS_FR = ["café", "crème brûlée", "naïve", "façade", "déjà vu", "Noël", "château", "résumé", "élève", "Ça va"]
WORDS_DE = ["Straße", "Größe", "Mädchen", "Übermensch", "Schloss Neuschwanstein", "GROSSE STRASSE", "Fußball"]
WORDS_OTHER = ["São Paulo", "Ångström", "Zürich", "Kraków", "Ærøskøbing", "Þingvellir", "Dvořák", "Łódź",
               "İstanbul", "ŞİŞLİ", "Tiếng Việt", "Phở bò", "español", "niño", "jalapeño", "Reykjavík",
               "ΣΟΦΙΑ", "Ελληνικά", "ΟΔΟΣ", "москва", "МОСКВА", "Ёлка", "Україна", "Ґанок", "Հայաստան",
               "ქართული", "ᲥᲐᲠᲗᲣᲚᲘ", "עברית", "שָׁלוֹם", "العربية", "مَرْحَبًا", "हिन्दी", "नमस्ते", "தமிழ்",
               "ไทย", "ພາສາລາວ", "ខ្មែរ", "မြန်မာ", "བོད་ཡིག", "ᏣᎳᎩ", "ꮳꮃꭹ", "𐐔𐐯𐑅𐐨𐑉𐐯𐐻", "Ǆemal", "ǅ", "ǆ"]
CJK = ["富士山の風景", "桜の木の下で", "猫耳の少女、アニメ風", "東京タワー 夜景", "水墨画 山水", "龍と虎",
       "一只可爱的熊猫在吃竹子", "赛博朋克城市，霓虹灯", "中国古代宫殿", "繁體中文測試", "한국어 프롬프트",
       "서울의 밤거리", "ｱﾆﾒ ｷｬﾗｸﾀｰ", "ＡＢＣ　全角英数字　１２３", "かわいい ねこ", "カタカナ テスト",
       "〜「引用」〜", "【高品質】", "㊙️ ㍻ ㌔", "𠮷野家", "𩸽の塩焼き", "ｶﾞｷﾞｸﾞ ﾊﾟﾋﾟﾌﾟ"]
EMOJI = ["🐱", "🐶🐕", "👨‍👩‍👧‍👦", "👍🏽", "👋🏿", "🏳️‍🌈", "🏴‍☠️", "🇯🇵", "🇺🇸🇬🇧", "1️⃣", "#️⃣", "❤️", "❤",
         "🧑🏻‍🚀", "👩🏾‍💻", "🫠", "🦄✨", "🔥🔥🔥", "😂😂", "☀️🌙⭐", "🍣🍜🍱", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "👁️‍🗨️", "🤌"]
WEIRD_SPACE = ["\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\u2029", "\u0085", "\u2009", "\u200a",
               "\u202f", "\u205f", "\u1680", "\u000b", "\u000c", "\u200b", "\ufeff", "\u180e", "  ", "\t\t\n  "]
CONTROLS = ["\x01", "\x07", "\x1b[31m", "\x7f", "\x80", "\x9f", "\ufffd", "\ue000", "\uffff", "\U0010ffff",
            "\U000e0041", "\u00ad", "\u200d", "\u200e", "\u202e", "\x1f", "\x1c\x1d\x1e"]
SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "<|EndOfText|>", "<|endoftext|",
            "<|endof", "|endoftext|>", "< |endoftext|>", "<<|endoftext|>>", "<|startoftext|><|endoftext|>"]
APOS = ["it's", "IT'S", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "we'll", "I'D", "don't", "they're",
        "you've", "I'm", "rock 'n' roll", "''s", "'''", "’s", "it’s", "'sun", "o'clock", "'", "'1", "'é"]
NUMBERS = ["1.5", "0.75", "-0.5", "+3", "1,000,000", "3.14159", "2024", "v1.5", "SD2.1", "1920x1080",
           "16:9", "4:3", "50%", "100 steps", "cfg 7.5", "seed 42", "1e-4", "0x1F", "№5", "½", "²", "Ⅻ",
           "ⅻ", "٣٤٥", "४२", "๓", "①②③", "⑩", "𝟘𝟙𝟚", "１２３", "3rd", "21st century", "1990s", "$100", "€5,99"]
WEIGHTS = ["(masterpiece:1.2)", "((best quality))", "[[blurry]]", "(detailed eyes:1.3)", "[cat|dog]",
           "[summer:winter:0.5]", "{red|blue|green}", "(word)", "((((nested))))", "(a:b:c)", "\\(escaped\\)",
           "<lora:detail:0.8>", "<hypernet:anime:1>", "embedding:EasyNegative", "AND", "BREAK", "(x:.5)",
           "[from::0.2]", "(wow!:1.1)", "!!!", "wow!!", "hello!", "!important", "?!", "...", "—", "–", "…"]


def nfd(s):
    return unicodedata.normalize("NFD", s)


def realistic(rng):
    parts = [rng.choice(SUBJECTS)]
    for _ in range(rng.randint(0, 3)):
        parts.append(rng.choice(STYLES))
    for _ in range(rng.randint(0, 6)):
        parts.append(rng.choice(DETAILS))
    if rng.random() < 0.4:
        parts.append(rng.choice(WEIGHTS))
    if rng.random() < 0.3:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(NUMBERS))
    if rng.random() < 0.3:
        tail = parts[1:]
        rng.shuffle(tail)
        parts[1:] = tail
    sep = rng.choice([", ", ",", " ", ", ", ". ", " | "])
    s = sep.join(parts)
    r = rng.random()
    if r < 0.1:
        s = s.upper()
    elif r < 0.2:
        s = s.title()
    return s


def negative(rng):
    return ", ".join(rng.sample(NEGATIVE, rng.randint(1, 12)))


def sprinkle(rng, base, pool, k):
    out = base
    for _ in range(k):
        pos = rng.randrange(len(out) + 1)
        out = out[:pos] + rng.choice(pool) + out[pos:]
    return out


def long_prompt(rng, n_parts):
    return ", ".join(realistic(rng) for _ in range(n_parts))


def hand_written():
    """Cases worth naming one by one."""
    p = ["", " ", "  \t\n ", "\u3000", "a", "A", "!", "!!", "'", "1", "12", "123456789", "a b", "a  b", "a\tb\nc",
         "\u00a0leading nbsp", "trailing nbsp\u00a0", "  leading and trailing spaces  ",
         "cafe\u0301", "caf\u00e9", "e\u0301\u0301", "a\u0316\u0301 a\u0301\u0316", "\u0301 leading mark",
         "\u1100\u1161\u11a8", "\u1100\u1161 \u11a8", "\uac00\u11a8", "한국어", nfd("한국어"), nfd("Tiếng Việt"),
         "Å\u030a", "\u212b", "\u2126 ohm", "\u0344", "\u0958", "\u0f73", "\u1e9b\u0323", "\u00c5\u0300",
         "ΣΑΣ", "σας", "Σ", "ΌΣΟΣ ΕΊΝΑΙ", "İ", "i\u0307", "İstanbul'DA", "ẞ", "ß", "ǅungla", "Ⓐⓑ", "ＡＢＣ",
         "𐐀𐐁", "Ꭰ", "ꭰ", "\u1c89", "\ua7cb", "\U00016ea0", "\u10a0", "ᲐᲑᲒ", "\u0130\u0307",
         "<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "<|ENDOFTEXT|>", "a<|endoftext|>b",
         "!<|startoftext|>", "x <|endoftext|> y", "<|endoftext|>\u0301", "e<|endoftext|>\u0301",
         "<|startoftext|>hello<|endoftext|>", "<|endoftext|><|endoftext|><|endoftext|>",
         "<|startoftext|>" * 40, "hello" * 100, "a" * 500, "ab" * 300, "!" * 100, "1" * 100,
         "🐱" * 60, "👨‍👩‍👧‍👦" * 10, "it's", "'s", "'S", "''s", "x'sy", "'ll've'd", "'re're",
         "\x01\x02\x03", "\x1b[0m", "tab\tseparated\tvalues", "line1\nline2\r\nline3\rline4",
         "\u2028\u2029", "zero\u200bwidth", "bom\ufeffhere", "soft\u00adhyphen", "mongolian\u180esep",
         "(masterpiece:1.2), best quality, 1girl, solo", "[x|y]", "((a)), [[b]], {c|d}", "a (b:1.5) c",
         "(((", ")))", "...", "—", "hello, world!", "HELLO WORLD!!!", "Wow!!! Amazing!!!", "!hi!", "?!?!",
         "3.14", "0.5", ".5", "5.", "1,5", "1 000", "10x10", "v2.1-768", "1/2", "½ ⅓ ¼", "x²+y³", "Ⅷ",
         "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "\U0001f1ef\U0001f1f5"]
    return p


def newer_than_python():
    """Code points where the reference's Unicode (16.0 classes, 17.0
    lowercase) differs from this Python's: all lowercase ones, and the ends
    and every 16th code point of each run of new letters and numbers."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    lower = normalizers.Lowercase()
    out = [c for c in cps if lower.normalize_str(chr(c)) != chr(c).lower()]
    for pattern, cat in ((r"\p{L}", "L"), (r"\p{N}", "N")):
        split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
        new = []
        for i in range(0, len(cps), 8192):
            for piece, _ in split.pre_tokenize_str("".join(chr(c) for c in cps[i:i + 8192])):
                new.extend(ord(ch) for ch in piece if unicodedata.category(ch)[0] != cat)
        new.sort()
        for k, c in enumerate(new):
            first = k == 0 or new[k - 1] != c - 1
            last = k == len(new) - 1 or new[k + 1] != c + 1
            if first or last or c % 16 == 0:
                out.append(c)
    return out


def sweep(rng):
    """Every code point where NFC, lowercase or the character classes do
    something, in prompts of 24 code points (letters, marks and the rest
    side by side), then the NFD form of every composite."""
    interesting = []
    for c in range(1, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        cat = unicodedata.category(ch)
        if cat in ("Cn", "Cs"):
            continue
        if (unicodedata.decomposition(ch) and not unicodedata.decomposition(ch).startswith("<")) or \
                unicodedata.combining(ch) or ch.lower() != ch or ch.upper() != ch or ch.isspace() or \
                (c < 0x3000 and cat[0] in "LN") or cat in ("Mn", "Mc", "Me", "Nl", "No", "Lt", "Lm"):
            interesting.append(c)
    # class boundaries of the whole range (first/last of each category run)
    prev = None
    for c in range(0, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        cat = unicodedata.category(chr(c))[0]
        if cat != prev and c > 0:
            interesting.extend([c - 1, c])
        prev = cat
    interesting.extend(newer_than_python())
    interesting = sorted({c for c in interesting if c and not 0xD800 <= c <= 0xDFFF})
    rng.shuffle(interesting)
    out = []
    for i in range(0, len(interesting), 24):
        out.append("".join(chr(c) for c in interesting[i:i + 24]))
    comps = [c for c in range(0xC0, 0x110000) if not 0xD800 <= c <= 0xDFFF and
             unicodedata.decomposition(chr(c)) and not unicodedata.decomposition(chr(c)).startswith("<")]
    rng.shuffle(comps)
    marks = [c for c in range(0x300, 0x370)] + [0x1dc0, 0x20d0, 0x0591, 0x05b0, 0x0e38, 0x302a, 0x1d165]
    for i in range(0, len(comps), 12):
        s = ""
        for c in comps[i:i + 12]:
            d = nfd(chr(c))
            if rng.random() < 0.5:  # an extra mark to reorder around
                d = d[:1] + chr(rng.choice(marks)) + d[1:]
            s += d + rng.choice(["", "", " ", "a"])
        out.append(s)
    return out


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else OUT
    rng = random.Random(SEED)
    prompts = hand_written()
    for _ in range(900):
        prompts.append(realistic(rng))
    for _ in range(150):
        prompts.append(negative(rng))
    for _ in range(60):
        prompts.append(long_prompt(rng, rng.randint(4, 12)))
    for pool, n, k in [(WORDS_FR + WORDS_DE + WORDS_OTHER, 160, 3), (CJK, 120, 2), (EMOJI, 120, 3),
                       (WEIRD_SPACE, 120, 4), (CONTROLS, 60, 2), (SPECIALS, 80, 2), (APOS, 100, 3),
                       (NUMBERS, 100, 3), (WEIGHTS, 100, 3)]:
        for _ in range(n):
            prompts.append(sprinkle(rng, realistic(rng), pool, rng.randint(1, k)))
    for _ in range(80):  # accents in decomposed form
        prompts.append(nfd(sprinkle(rng, realistic(rng), WORDS_FR + WORDS_DE + WORDS_OTHER, 2)))
    for _ in range(60):  # everything at once
        s = realistic(rng)
        for pool in (WORDS_OTHER, CJK, EMOJI, WEIRD_SPACE, SPECIALS, APOS, NUMBERS, WEIGHTS, CONTROLS):
            if rng.random() < 0.5:
                s = sprinkle(rng, s, pool, 1)
        prompts.append(s)
    prompts.extend(sweep(rng))
    assert all("\x00" not in p for p in prompts)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for p in prompts:
            line = json.dumps(p, ensure_ascii=False)
            assert "\n" not in line and "\r" not in line
            f.write(line + "\n")
    print("wrote %s: %d prompts" % (out_path, len(prompts)))


if __name__ == "__main__":
    main()
