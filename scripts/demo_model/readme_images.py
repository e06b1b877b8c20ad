#!/usr/bin/env python3
"""Makes the README's pictures of the demo model, through libdiffuse (the
Python binding over the C library), at the library's defaults:

  docs/images/demo-picture.png         the main command's picture (same prompt
                                       and seed as scripts/run.sh), 4x nearest
  docs/images/demo-edit-variation.png  generate -> edit (the circle masked and
                                       repainted blue) -> three variations
  examples/demo/mask-left.png          the mask the edit uses (white = repaint),
                                       for `diffuse edit --mask`

Usage: .venv-ref/bin/python scripts/demo_model/readme_images.py [--model models/demo]
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python", "src"))

PROMPT = "a small red circle on the left on a yellow background"   # scripts/run.sh
EDIT_PROMPT = "a small blue circle on the left on a yellow background"
SEED = 42


def up(im, k=4):
    return np.repeat(np.repeat(im, k, axis=0), k, axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    a = ap.parse_args()
    os.environ.setdefault("DIFFUSE_LIBRARY", os.path.join(ROOT, "build", "libdiffuse.so.0"))
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    import diffuse

    os.makedirs(os.path.join(ROOT, "docs", "images"), exist_ok=True)
    os.makedirs(os.path.join(ROOT, "examples", "demo"), exist_ok=True)
    with diffuse.Model(a.model) as model, diffuse.Context(model) as ctx:
        pic, = ctx.generate(PROMPT, seed=SEED, return_numpy=True)
        h, w = pic.shape[:2]
        mask = np.zeros((h, w), np.uint8)
        mask[:, : w * 7 // 16] = 255            # the left part, where "on the left" draws
        Image.fromarray(mask).save(os.path.join(ROOT, "examples", "demo", "mask-left.png"))
        edited, = ctx.edit(pic, EDIT_PROMPT, mask=mask, seed=SEED, return_numpy=True)
        variations = ctx.variation(pic, n=3, prompt=PROMPT, strength=0.6, seed=SEED, return_numpy=True)
    Image.fromarray(up(pic)).save(os.path.join(ROOT, "docs", "images", "demo-picture.png"))
    gap = np.full((4 * h, 8, 3), 255, np.uint8)
    row = [up(pic), gap, up(np.stack([mask] * 3, -1)), gap, up(edited), gap]
    for v in variations:
        row += [up(v), gap]
    Image.fromarray(np.concatenate(row[:-1], axis=1)).save(
        os.path.join(ROOT, "docs", "images", "demo-edit-variation.png"))
    print("wrote docs/images/demo-picture.png, docs/images/demo-edit-variation.png, examples/demo/mask-left.png")


if __name__ == "__main__":
    main()
