#!/usr/bin/env python3
"""Scores prompt faithfulness of generated images by deterministic image
analysis, against the metadata of dataset.py's held-out prompts.

The scoring is in score_image(rgb, spec): rgb is an HxWx3 uint8 numpy array
(any size; it is box-resized to 64x64), spec is one prompt's metadata as
dataset.eval_specs() / the --eval-json file give it. It does not care who
made the image: diffusers (this script's --model), or libdiffuse's C
pipeline (write PNGs, then --images).

Per image:
  background: the most frequent nearest-palette colour of the whole image
      (plain) or of each half (two-tone) must be the named colour(s).
  objects: pixels that differ from the estimated background by more than
      FG_THRESHOLD form a foreground mask; its 8-connected components of at
      least MIN_AREA pixels are candidates. For each named object, the
      largest component whose centroid is nearest to the named position's
      anchor is the object (missing -> wrong). Its colour is the nearest
      palette colour to the median of its interior pixels; its shape is the
      dataset shape whose antialiased template, fitted to the component's
      bounding box (at a few scales and blurs), best matches the object's
      coverage map (soft IoU; coverage = how far each pixel lies from the
      background towards the object's colour). Size (bbox side below/above
      SIZE_SPLIT px) is reported but not required.
  correct: background right and every object found with the right colour
      and shape.

Usage:
  evaluate_reference.py --targets                     # scorer sanity check on the true renders
  evaluate_reference.py --images DIR [--prompts eval.json]   # DIR/0000.png ... in prompt order
  evaluate_reference.py --model models/demo [--limit N]      # generate with diffusers, then score
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dataset as D   # noqa: E402

FG_THRESHOLD = 45.0   # RGB distance from the background (palette min distance ~90)
MIN_AREA = 10         # pixels
SIZE_SPLIT = 21.0
SEAM = 2              # pixels each side of a two-tone boundary treated as seam     # bbox side separating "small" (~16 px) from "large" (~26 px)

_PAL_NAMES = D.COLOUR_NAMES
_PAL = np.array([D.COLOURS[c] for c in _PAL_NAMES], np.float32)
_ANCHORS = {p: np.array(D.POSITIONS[p][0], np.float32) for p in D.POSITION_NAMES}
_TEMPLATE_R = 20.0
_TEMPLATES = {}


def _template_box(shape):
    """(bbox w, h, bbox centre offset from the shape centre) at r=_TEMPLATE_R."""
    if shape not in _TEMPLATES:
        m = D.shape_mask(shape, 32.0, 32.0, _TEMPLATE_R, 64) >= 0.5
        ys, xs = np.nonzero(m)
        w, h = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
        cx, cy = (xs.max() + 1 + xs.min()) / 2, (ys.max() + 1 + ys.min()) / 2
        _TEMPLATES[shape] = (w, h, cx - 32.0, cy - 32.0)
    return _TEMPLATES[shape]


def to64(rgb):
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError("expected HxWx3 RGB")
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float64)), 0, 255).astype(np.uint8)
    if a.shape[:2] != (D.SIZE, D.SIZE):
        a = np.asarray(Image.fromarray(a).resize((D.SIZE, D.SIZE), Image.BOX))
    return a.astype(np.float32)


def nearest_colour(rgb):
    """Palette index of each RGB value (..., 3)."""
    d = ((rgb[..., None, :] - _PAL) ** 2).sum(-1)
    return d.argmin(-1)


def _regions(bg):
    """Boolean masks of the background regions of a background spec."""
    S = D.SIZE
    full = np.ones((S, S), bool)
    if bg["split"] is None:
        return [full]
    a = np.zeros((S, S), bool)
    if bg["split"] == "horizontal":
        a[:S // 2] = True
    else:
        a[:, :S // 2] = True
    return [a, ~a]


def _components(mask):
    """8-connected components: list of (ys, xs) index arrays."""
    H, W = mask.shape
    seen = np.zeros_like(mask)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack = [(y0, x0)]
        seen[y0, x0] = True
        ys, xs = [], []
        while stack:
            y, x = stack.pop()
            ys.append(y)
            xs.append(x)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < H and 0 <= xx < W and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        stack.append((yy, xx))
        out.append((np.array(ys), np.array(xs)))
    return out


def _gauss_blur(a, sigma):
    if sigma <= 0:
        return a
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, r, mode="constant")
    p = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, p)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, p)


BLURS = (0.0, 0.8, 1.5)
SCALES = (0.9, 1.0, 1.1)


def classify_shape(alpha, comp_mask):
    """(best shape, {shape: score}) for a component. alpha: float (64, 64)
    estimated coverage of the object colour (0 = background) with other
    objects zeroed; comp_mask: boolean pixels of the component. Each shape's
    antialiased template is fitted to the component's bounding box and
    compared, soft IoU sum(min)/sum(max), at a few blurs and scales (generated
    images are softer than the renders); the best match wins."""
    ys, xs = np.nonzero(comp_mask)
    w, h = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
    bcx, bcy = (xs.max() + 1 + xs.min()) / 2, (ys.max() + 1 + ys.min()) / 2
    y0, y1 = max(0, ys.min() - 4), min(D.SIZE, ys.max() + 5)
    x0, x1 = max(0, xs.min() - 4), min(D.SIZE, xs.max() + 5)
    a = alpha[y0:y1, x0:x1]
    scores = {}
    for shape in D.SHAPES:
        tw, th, ox, oy = _template_box(shape)
        best = 0.0
        for k in SCALES:
            s = 0.5 * (w / tw + h / th) * k
            cx, cy = bcx - ox * s, bcy - oy * s
            t0 = D.shape_mask(shape, cx, cy, _TEMPLATE_R * s, D.SIZE)
            for sig in BLURS:
                t = _gauss_blur(t0, sig)[y0:y1, x0:x1]
                v = float(np.minimum(a, t).sum() / max(1e-6, np.maximum(a, t).sum()))
                best = max(best, v)
        scores[shape] = best
    return max(scores, key=scores.get), scores


def score_image(rgb, spec):
    """Scores one image against one prompt's metadata. Returns a dict with
    'correct' (bool), 'background_ok', and per object 'found', 'colour',
    'shape', 'size', 'position_ok', 'colour_ok', 'shape_ok', 'size_ok'."""
    img = to64(rgb)
    labels = nearest_colour(img)
    bg = spec["background"]
    regions = _regions(bg)
    bgref = np.empty_like(img)
    bg_found = []
    for reg in regions:
        lab = np.bincount(labels[reg], minlength=len(_PAL_NAMES)).argmax()
        bg_found.append(_PAL_NAMES[lab])
        sel = reg & (labels == lab)
        bgref[reg] = np.median(img[sel], axis=0) if sel.any() else _PAL[lab]
    background_ok = bg_found == list(bg["colours"])

    dist = np.sqrt(((img - bgref) ** 2).sum(-1))
    if len(regions) == 2:
        # Near a two-tone seam, blends of the two background colours are background.
        b0, b1 = (np.median(bgref[r], axis=0) for r in regions)
        seg = b1 - b0
        u = np.clip(((img - b0) * seg).sum(-1) / max(1e-6, float((seg * seg).sum())), 0, 1)
        dseg = np.sqrt(((img - (b0 + u[..., None] * seg)) ** 2).sum(-1))
        band = np.zeros(dist.shape, bool)
        h = D.SIZE // 2
        if bg["split"] == "horizontal":
            band[h - SEAM:h + SEAM] = True
        else:
            band[:, h - SEAM:h + SEAM] = True
        raw = dist > FG_THRESHOLD
        dist = np.where(band, np.minimum(dist, dseg), dist)
        fg = dist > FG_THRESHOLD
        # An object crossing the seam can have a colour between the two
        # background colours (orange between red and yellow): restore raw
        # foreground in the band where the object continues just outside it.
        t = (lambda a: a) if bg["split"] == "horizontal" else (lambda a: a.T)
        fgt, rawt, bandt = t(fg), t(raw), t(band)
        near = (fgt[h - SEAM - 3:h - SEAM].any(0) | fgt[h + SEAM:h + SEAM + 3].any(0))
        fg = t(fgt | (bandt & rawt & near[None, :]))
    else:
        fg = dist > FG_THRESHOLD
    comps = []
    for ys, xs in _components(fg):
        if len(ys) < MIN_AREA:
            continue
        w, h = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
        if min(w, h) <= 3 and max(w, h) >= 4 * min(w, h):
            continue          # a seam along a two-tone boundary, not an object
        c = np.array([xs.mean() + 0.5, ys.mean() + 0.5], np.float32)
        pos = min(_ANCHORS, key=lambda p: float(((_ANCHORS[p] - c) ** 2).sum()))
        comps.append(dict(ys=ys, xs=xs, pos=pos, area=len(ys), bbox=(w, h)))

    objs = []
    for ob in spec["objects"]:
        cands = [c for c in comps if c["pos"] == ob["position"]]
        r = dict(want=dict(shape=ob["shape"], colour=ob["colour"], size=ob["size"],
                           position=ob["position"]), found=bool(cands))
        if cands:
            c = max(cands, key=lambda c: c["area"])
            m = np.zeros(fg.shape, bool)
            m[c["ys"], c["xs"]] = True
            inner = m.copy()
            inner[1:] &= m[:-1]
            inner[:-1] &= m[1:]
            inner[:, 1:] &= m[:, :-1]
            inner[:, :-1] &= m[:, 1:]
            px = img[inner] if inner.sum() >= 4 else img[m]
            med = np.median(px, axis=0)
            colour = _PAL_NAMES[nearest_colour(med)]
            # coverage of this object's colour over the background, others zeroed
            d = med - bgref
            alpha = np.clip(((img - bgref) * d).sum(-1) / np.maximum(1e-6, (d * d).sum(-1)), 0, 1)
            for o in comps:
                if o is not c:
                    alpha[o["ys"], o["xs"]] = 0
            shape, ious = classify_shape(alpha, m)
            size = "large" if max(c["bbox"]) > SIZE_SPLIT else "small"
            r.update(colour=colour, shape=shape, size=size, iou=round(ious[shape], 3),
                     position_ok=True, colour_ok=colour == ob["colour"],
                     shape_ok=shape == ob["shape"], size_ok=size == ob["size"])
        else:
            r.update(position_ok=False, colour_ok=False, shape_ok=False, size_ok=False)
        r["correct"] = r["found"] and r["colour_ok"] and r["shape_ok"]
        objs.append(r)
    return dict(correct=bool(background_ok and all(o["correct"] for o in objs)),
                background_ok=bool(background_ok), background=bg_found, objects=objs)


def score_batch(images, specs):
    """Scores a list of images against specs; returns {'per_image', 'summary'}."""
    per = [score_image(im, sp) for im, sp in zip(images, specs)]
    summary = {}
    for split in ("single", "double", "novel", "all"):
        idx = [i for i, s in enumerate(specs) if split == "all" or s.get("split") == split]
        if not idx:
            continue
        objs = [o for i in idx for o in per[i]["objects"]]
        summary[split] = dict(
            n=len(idx),
            correct=round(float(np.mean([per[i]["correct"] for i in idx])), 4),
            background=round(float(np.mean([per[i]["background_ok"] for i in idx])), 4),
            object_found=round(float(np.mean([o["found"] for o in objs])), 4),
            object_colour=round(float(np.mean([o["colour_ok"] for o in objs])), 4),
            object_shape=round(float(np.mean([o["shape_ok"] for o in objs])), 4),
            object_size=round(float(np.mean([o["size_ok"] for o in objs])), 4))
    return dict(per_image=per, summary=summary)


def _load_prompts(path, seed):
    if path:
        with open(path) as f:
            return json.load(f)["prompts"]
    return D.eval_specs(seed)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", help="eval JSON from dataset.py --eval-json (default: regenerate)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (without --prompts)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--targets", action="store_true", help="score the true renders (sanity check)")
    g.add_argument("--images", help="folder of PNGs named 0000.png, 0001.png, ... in prompt order")
    g.add_argument("--model", help="diffusers folder: generate with StableDiffusionPipeline")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--gen-seed", type=int, default=0)
    ap.add_argument("--save-images", help="with --model: also write the PNGs here")
    ap.add_argument("--json", help="write the full per-image results here")
    a = ap.parse_args()

    specs = _load_prompts(a.prompts, a.seed)
    if a.limit:
        specs = specs[:a.limit]
    if a.targets:
        images = [D.render(dict(s)) for s in specs]
    elif a.images:
        images = [np.asarray(Image.open(os.path.join(a.images, "%04d.png" % i)).convert("RGB"))
                  for i in range(len(specs))]
    else:
        import torch
        from diffusers import StableDiffusionPipeline
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        pipe = StableDiffusionPipeline.from_pretrained(a.model, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        images = []
        for i, s in enumerate(specs):
            gen = torch.Generator().manual_seed(a.gen_seed + i)
            im = pipe(s["caption"], num_inference_steps=a.steps, guidance_scale=a.guidance,
                      generator=gen, output_type="np").images[0]
            images.append((np.clip(im, 0, 1) * 255).round().astype(np.uint8))
            if a.save_images:
                os.makedirs(a.save_images, exist_ok=True)
                Image.fromarray(images[-1]).save(os.path.join(a.save_images, "%04d.png" % i))
    res = score_batch(images, specs)
    print(json.dumps(res["summary"], indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary=res["summary"], per_image=[
                dict(caption=s["caption"], split=s["split"], **r)
                for s, r in zip(specs, res["per_image"])]), f, indent=1)


if __name__ == "__main__":
    main()
