#!/usr/bin/env python3
"""generate.py - the Python example: load a model, generate images with a
progress line per step, save them as PNG. Run by the test command.

    python examples/generate.py MODEL_DIR "a red circle" -n 2 --steps 20 -o out/py
"""
import argparse
import sys

import diffuse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("prompt")
    ap.add_argument("-n", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("-o", "--output", default="generated", help="prefix of the PNG files")
    a = ap.parse_args()

    def on_progress(p: diffuse.Progress) -> bool:
        print(f"image {p.image_index + 1}/{p.image_count} {p.stage.name.lower()} {p.step}/{p.total}", file=sys.stderr)
        return False  # True would cancel

    try:
        with diffuse.Model(a.model) as model, diffuse.Context(model, progress=on_progress) as ctx:
            images = ctx.generate(a.prompt, n=a.n, steps=a.steps, seed=a.seed)
    except diffuse.DiffuseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for i, im in enumerate(images):
        path = f"{a.output}-{i}.png"
        im.save(path)
        print(f"wrote {path} ({im.size[0]}x{im.size[1]}, seed {a.seed + i})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
