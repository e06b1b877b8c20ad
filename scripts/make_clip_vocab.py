#!/usr/bin/env python3
"""Writes vocab.json and merges.txt (the Hugging Face CLIPTokenizer files)
from OpenAI's bpe_simple_vocab_16e6.txt.gz, exactly as OpenAI's CLIP
simple_tokenizer.py builds its encoder: 256 byte symbols, their `</w>`
variants, one token per merge, then <|startoftext|> and <|endoftext|>.

Usage: make_clip_vocab.py [BPE_GZ] OUT_DIR   (BPE_GZ defaults to lib/text/)
"""
import gzip
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BPE = os.path.join(HERE, "..", "lib", "text", "bpe_simple_vocab_16e6.txt.gz")


def bytes_to_unicode():
    """GPT-2/CLIP's reversible byte -> printable unicode character map."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab(bpe_gz):
    """(vocab dict token->id, merges list of (a, b)) as CLIP builds them."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    return dict(zip(vocab, range(len(vocab)))), merges


def main(argv):
    if len(argv) == 2:
        bpe, out = DEFAULT_BPE, argv[1]
    elif len(argv) == 3:
        bpe, out = argv[1], argv[2]
    else:
        sys.exit(__doc__)
    vocab, merges = clip_vocab(bpe)
    assert len(vocab) == 49408 and len(merges) == 48894
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(a + " " + b + "\n")


if __name__ == "__main__":
    main(sys.argv)
