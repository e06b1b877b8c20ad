#!/usr/bin/env python3
"""Writes the tokenizer fixtures under tests/fixtures/tokenizer/ from the
pinned reference, transformers 5.23.0's CLIPTokenizer (tokenizers 0.23.3):

  clip-sd1/         vocab.json + merges.txt (scripts/make_clip_vocab.py, from
                    lib/text/bpe_simple_vocab_16e6.txt.gz) with the
                    tokenizer_config.json / special_tokens_map.json of
                    openai/clip-vit-large-patch14 as SD 1.x folders ship them
  clip-sd2/         the config files of SD 2.x folders (pad token "!"); the
                    test puts them beside clip-sd1's vocabulary in a temp dir
  clip-sd2-modern/  the same written by transformers >= 4.34
                    (added_tokens_decoder, as SDXL's tokenizer_2 has it)
  tiny-v5/          a small vocabulary (ASCII bytes only, so other text needs
                    the unk token) saved by CLIPTokenizer.save_pretrained of
                    transformers 5.x: tokenizer.json + tokenizer_config.json
  expected.txt.gz   for each prompt of corpus.jsonl and each folder, the ids
                    of `tok(prompt).input_ids` and, for clip-sd1 and clip-sd2,
                    `tok(prompt, padding="max_length", max_length=77,
                    truncation=True).input_ids` as diffusers' pipelines call it

Each folder is loaded with CLIPTokenizer.from_pretrained, as diffusers does.
Run in a venv with transformers==5.23.0 tokenizers==0.23.3 (no torch
needed; scripts/ref-venv.sh makes the full one). Usage:
make_tokenizer_fixtures.py
"""
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import tokenizers
import transformers
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
MAGIC = "DFTOK-FIXTURE"
VERSION = 1
PINS = {"transformers": "5.23.0", "tokenizers": "0.23.3"}

S, E = "<|startoftext|>", "<|endoftext|>"


def added_token(content, normalized, typed):
    d = {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": normalized}
    if typed:
        d["__type"] = "AddedToken"
    return d


# openai/clip-vit-large-patch14 (and SD 1.x tokenizer/ folders), written by transformers 4.x
SD1_CONFIG = {
    "unk_token": added_token(E, True, True), "bos_token": added_token(S, True, True),
    "eos_token": added_token(E, True, True), "pad_token": E, "add_prefix_space": False, "errors": "replace",
    "do_lower_case": True, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer",
}
SD1_SPECIAL = {"bos_token": added_token(S, True, False), "eos_token": added_token(E, True, False),
               "unk_token": added_token(E, True, False), "pad_token": E}
SD2_SPECIAL = dict(SD1_SPECIAL, pad_token="!")


def decoder_entry(content, normalized, special):
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
            "single_word": False, "special": special}


# the same SD 2.x tokenizer re-saved by transformers >= 4.34 (SDXL's tokenizer_2 looks like this)
SD2_MODERN_CONFIG = {
    "add_prefix_space": False,
    "added_tokens_decoder": {"0": decoder_entry("!", False, True), "49406": decoder_entry(S, True, True),
                             "49407": decoder_entry(E, False, True)},
    "bos_token": S, "clean_up_tokenization_spaces": True, "do_lower_case": True, "eos_token": E,
    "errors": "replace", "model_max_length": 77, "pad_token": "!", "tokenizer_class": "CLIPTokenizer",
    "unk_token": E,
}
SD2_MODERN_SPECIAL = {"bos_token": S, "eos_token": E, "pad_token": "!", "unk_token": E}


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def tiny_vocab(sd1_dir):
    """ASCII byte symbols, the CLIP merges that stay within them (first 3000), specials."""
    vocab = json.load(open(os.path.join(sd1_dir, "vocab.json"), encoding="utf-8"))
    merges = [tuple(l.split(" ")) for l in open(os.path.join(sd1_dir, "merges.txt"), encoding="utf-8")
              .read().split("\n")[1:] if l]
    toks = [chr(c) for c in range(0x21, 0x7F)]
    toks += [t + "</w>" for t in toks]
    have = set(toks)
    kept = []
    for a, b in merges[:3000]:
        if a in have and b in have and a + b not in have:
            kept.append((a, b))
            have.add(a + b)
            toks.append(a + b)
    toks += [S, E]
    assert all(t in vocab for t in toks)
    return {t: i for i, t in enumerate(toks)}, kept


def main():
    for name, want in PINS.items():
        have = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}[name]
        if have != want:
            sys.exit("need %s==%s, found %s" % (name, want, have))
    sd1 = os.path.join(FIX, "clip-sd1")
    os.makedirs(sd1, exist_ok=True)
    subprocess.check_call([sys.executable, os.path.join(HERE, "make_clip_vocab.py"), sd1])
    write_json(os.path.join(sd1, "tokenizer_config.json"), SD1_CONFIG)
    write_json(os.path.join(sd1, "special_tokens_map.json"), SD1_SPECIAL, indent=None)
    sd2 = os.path.join(FIX, "clip-sd2")
    os.makedirs(sd2, exist_ok=True)
    write_json(os.path.join(sd2, "tokenizer_config.json"), SD1_CONFIG)
    write_json(os.path.join(sd2, "special_tokens_map.json"), SD2_SPECIAL, indent=None)
    sd2m = os.path.join(FIX, "clip-sd2-modern")
    os.makedirs(sd2m, exist_ok=True)
    write_json(os.path.join(sd2m, "tokenizer_config.json"), SD2_MODERN_CONFIG)
    write_json(os.path.join(sd2m, "special_tokens_map.json"), SD2_MODERN_SPECIAL)

    tiny = os.path.join(FIX, "tiny-v5")
    shutil.rmtree(tiny, ignore_errors=True)
    tv, tm = tiny_vocab(sd1)
    CLIPTokenizer(vocab=tv, merges=tm, model_max_length=77).save_pretrained(tiny)
    # drop the save's absolute/volatile keys so the file is the same on every machine
    cfg_path = os.path.join(tiny, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    for k in ("name_or_path", "is_local", "local_files_only"):
        cfg.pop(k, None)
    write_json(cfg_path, cfg)

    tmp = tempfile.mkdtemp()
    try:
        folders = {}
        for name, cfg_dir in (("sd1", sd1), ("sd2", sd2), ("sd2-modern", sd2m)):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            for f in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(sd1, f), d)
            for f in os.listdir(cfg_dir):
                if f.endswith(".json") and f != "vocab.json":
                    shutil.copy(os.path.join(cfg_dir, f), d)
            folders[name] = CLIPTokenizer.from_pretrained(d)
        folders["tiny-v5"] = CLIPTokenizer.from_pretrained(tiny)
    finally:
        shutil.rmtree(tmp)
    assert folders["sd1"].pad_token_id == 49407 and folders["sd2"].pad_token_id == 0
    assert folders["sd2-modern"].pad_token_id == 0

    corpus_path = os.path.join(FIX, "corpus.jsonl")
    raw = open(corpus_path, "rb").read()
    prompts = [json.loads(l) for l in raw.decode("utf-8").split("\n") if l]
    lines = [
        "%s %d" % (MAGIC, VERSION),
        "# written by scripts/make_tokenizer_fixtures.py from CLIPTokenizer.from_pretrained of each folder",
        "reference transformers %s tokenizers %s" % (transformers.__version__, tokenizers.__version__),
        "corpus corpus.jsonl %d sha256 %s" % (len(prompts), hashlib.sha256(raw).hexdigest()),
        "configs %s" % " ".join(folders),
        "padded sd1 sd2 77",
        "# then per prompt i: 'i CONFIG full N ids...' for each config, 'i CONFIG pad77 ids...' for sd1 and sd2",
    ]
    n_trunc = 0
    for i, p in enumerate(prompts):
        for name, tok in folders.items():
            ids = tok(p).input_ids
            lines.append("%d %s full %d %s" % (i, name, len(ids), " ".join(map(str, ids))))
            if name in ("sd1", "sd2"):
                pad = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
                assert tok.model_max_length == 77 and len(pad) == 77
                lines.append("%d %s pad77 %s" % (i, name, " ".join(map(str, pad))))
                n_trunc += len(ids) > 77
    lines.append("end %d" % len(prompts))
    data = ("\n".join(lines) + "\n").encode("ascii")
    with open(os.path.join(FIX, "expected.txt.gz"), "wb") as f:
        with gzip.GzipFile(filename="expected.txt", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
            gz.write(data)
    print("wrote %s/expected.txt.gz: %d prompts x %d configs (%d truncated at 77), %d bytes uncompressed" % (
        FIX, len(prompts), len(folders), n_trunc // 2, len(data)))


if __name__ == "__main__":
    main()
