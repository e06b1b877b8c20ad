#!/usr/bin/env python3
"""Prompt-faithfulness score of a model run through libdiffuse (the C
pipeline, via the Python binding), on the held-out prompts of dataset.py.

For each evaluation prompt (150 single-object, 150 two-object, 60 with a
colour/shape pair never seen in training), libdiffuse generates one image
at the library's defaults (30 steps, guidance 7.5, the model's scheduler)
with seed BASE + i; the PNGs are written to --images and scored by
evaluate_reference.score_batch (deterministic image analysis: background
colour, and the colour and shape of the object at each named position).

Usage (reference venv, for numpy/Pillow; libdiffuse built in build/):
  .venv-ref/bin/python scripts/demo_model/evaluate.py --model models/demo \\
      --images out/eval --json out/eval.json --grid out/eval-grid.png

Prints the summary per split; --json writes it with the per-image results.
"""
import argparse
import copy
import json
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "bindings", "python", "src"))
import dataset as D            # noqa: E402
import evaluate_reference as R  # noqa: E402


def grid(images, specs, path, per_split=8):
    """[target | generated] pairs, one row per split (first per_split prompts)."""
    rows = []
    for split in ("single", "double", "novel"):
        idx = [i for i, s in enumerate(specs) if s["split"] == split][:per_split]
        if not idx:
            continue
        cells = []
        for i in idx:
            tgt = D.render(dict(specs[i]))
            gen = np.asarray(Image.fromarray(images[i]).resize(tgt.shape[1::-1], Image.NEAREST))
            cells.append(np.concatenate([tgt, gen], axis=1))
            cells.append(np.full((tgt.shape[0], 4, 3), 255, np.uint8))
        rows.append(np.concatenate(cells, axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def recolour(spec):
    """The spec with its first object in another colour (the next palette
    colour used by neither the object nor the background), re-captioned;
    or None if the new pair is one training never shows."""
    new = copy.deepcopy(spec)
    ob = new["objects"][0]
    taken = set(new["background"]["colours"]) | {o["colour"] for o in new["objects"]}
    k = D.COLOUR_NAMES.index(ob["colour"])
    for j in range(1, len(D.COLOUR_NAMES)):
        c = D.COLOUR_NAMES[(k + j) % len(D.COLOUR_NAMES)]
        if c not in taken and (c, ob["shape"]) not in D.HELDOUT_PAIRS:
            ob["colour"] = c
            new["caption"] = D.caption_of(new)
            return new
    return None


def object_mask(spec, size, grow=6):
    """White (255) over the first object's box (from the true render) grown
    by @grow pixels, black elsewhere: the part an edit repaints."""
    s = dict(spec, objects=[dict(o) for o in spec["objects"]])
    D.render(s)
    x0, y0, x1, y1 = s["objects"][0]["bbox"]
    m = np.zeros((size, size), np.uint8)
    m[max(0, y0 - grow):min(size, y1 + grow), max(0, x0 - grow):min(size, x1 + grow)] = 255
    return m


def edits_and_variations(ctx, images, specs, n, a, out_dir):
    """Edit: the first object of each of the first n single-object images is
    masked and repainted in another colour (prompt: the new caption); scored
    against the new spec, and the pixels outside the mask must come back
    unchanged. Variation (strength 0.6, same prompt): scored against the
    original spec."""
    idx = [i for i, s in enumerate(specs) if s["split"] == "single"][:n]
    ed_imgs, ed_specs, var_imgs, var_specs, kept = [], [], [], [], []
    for i in idx:
        new = recolour(specs[i])
        if new is None:
            continue
        mask = object_mask(specs[i], images[i].shape[0])
        im, = ctx.edit(images[i], new["caption"], mask=mask, steps=a.steps, guidance=a.guidance,
                       seed=a.seed + i, return_numpy=True)
        im = np.ascontiguousarray(im[..., :3])
        kept.append(bool(np.array_equal(im[mask == 0], images[i][mask == 0])))
        ed_imgs.append(im)
        ed_specs.append(new)
        Image.fromarray(im).save(os.path.join(out_dir, "edit-%04d.png" % i))
        v, = ctx.variation(images[i], strength=0.6, prompt=specs[i]["caption"], steps=a.steps,
                           guidance=a.guidance, seed=a.seed + i, return_numpy=True)
        var_imgs.append(np.ascontiguousarray(v[..., :3]))
        var_specs.append(specs[i])
        Image.fromarray(var_imgs[-1]).save(os.path.join(out_dir, "variation-%04d.png" % i))
    ed = R.score_batch(ed_imgs, ed_specs)["summary"]["single"]
    va = R.score_batch(var_imgs, var_specs)["summary"]["single"]
    return dict(edit=dict(ed, unmasked_pixels_unchanged=round(float(np.mean(kept)), 4)), variation=va)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--lib", default=None, help="libdiffuse.so to load (default: DIFFUSE_LIBRARY or build/)")
    ap.add_argument("--images", required=True, help="folder for the generated PNGs (0000.png, ...)")
    ap.add_argument("--steps", type=int, default=30, help="default: libdiffuse's default, 30")
    ap.add_argument("--guidance", type=float, default=7.5, help="default: libdiffuse's default, 7.5")
    ap.add_argument("--sampler", default="default")
    ap.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    ap.add_argument("--dataset-seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0, help="libdiffuse CPU threads (0 = all cores)")
    ap.add_argument("--json", help="write the summary and per-image results here")
    ap.add_argument("--grid", help="write a [target | generated] sample grid here")
    ap.add_argument("--edits", type=int, default=0,
                    help="also edit (recolour the object) and vary this many single-object images")
    a = ap.parse_args()
    if a.lib:
        os.environ["DIFFUSE_LIBRARY"] = os.path.abspath(a.lib)
    elif "DIFFUSE_LIBRARY" not in os.environ:
        os.environ["DIFFUSE_LIBRARY"] = os.path.join(ROOT, "build", "libdiffuse.so.0")
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    import diffuse

    specs = D.eval_specs(a.dataset_seed)
    if a.limit:
        specs = specs[:a.limit]
    os.makedirs(a.images, exist_ok=True)
    images = []
    t0 = time.perf_counter()
    with diffuse.Model(a.model) as model, diffuse.Context(model, threads=a.threads) as ctx:
        for i, s in enumerate(specs):
            im, = ctx.generate(s["caption"], steps=a.steps, guidance=a.guidance, sampler=a.sampler,
                               seed=a.seed + i, return_numpy=True)
            images.append(np.ascontiguousarray(im[..., :3]))
            Image.fromarray(images[-1]).save(os.path.join(a.images, "%04d.png" % i))
            if (i + 1) % 60 == 0 or i + 1 == len(specs):
                print("%d/%d images, %.1f s each" % (i + 1, len(specs), (time.perf_counter() - t0) / (i + 1)),
                      file=sys.stderr, flush=True)
        per_image_s = (time.perf_counter() - t0) / len(specs)
        extra = edits_and_variations(ctx, images, specs, a.edits, a, a.images) if a.edits else {}
    res = R.score_batch(images, specs)
    summary = dict(res["summary"], **extra, settings=dict(steps=a.steps, guidance=a.guidance, sampler=a.sampler,
                                                  seed=a.seed, library=diffuse.library_path(),
                                                  seconds_per_image=round(per_image_s, 3)))
    print(json.dumps(summary, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary=summary, per_image=[dict(caption=s["caption"], split=s["split"], **r)
                                                       for s, r in zip(specs, res["per_image"])]), f, indent=1)
    if a.grid:
        grid(images, specs, a.grid)


if __name__ == "__main__":
    main()
