#!/usr/bin/env python3
"""Procedural captioned dataset for the libdiffuse demo model.

Every image is 64x64 RGB: one or two flat-coloured shapes on a plain or a
two-tone background, drawn antialiased (each shape is rasterised as a
coverage mask at 4x resolution, box-filtered down to 64x64 and composited).
Each sample comes with its caption and its metadata (shape, colour, size,
position, centre, bounding box of every object; the background colours), so
an evaluation script can score a generated image against the prompt.

Determinism: sample `i` of a split is a pure function of (seed, split, i):
its random numbers come from numpy.random.default_rng([seed, stream, i]).
Nothing depends on the machine, the order of calls or the thread count.

Held-out split (see docs/demo-model.md):
  * eval "single" and "double": prompts drawn from the training distribution
    with a separate random stream; training rejects (and redraws) any sample
    whose caption equals one of them, so no evaluation prompt is ever
    trained on.
  * eval "novel": prompts that use a (colour, shape) pair from
    HELDOUT_PAIRS. No training image contains an object with such a pair, so
    these measure composition of attributes never seen together.

Only numpy and PIL are needed; this module imports no torch.

Usage (writes a preview grid and the evaluation prompts):
  dataset.py --seed 0 --preview grid.png --eval-json eval.json
"""
import argparse
import json
import math

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64          # image side, pixels
SS = 4             # supersampling factor for antialiased masks

# Clearly distinct colours (sRGB). Object and background use the same names.
COLOURS = {
    "red":    (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green":  (30, 160, 50),
    "cyan":   (40, 215, 230),
    "blue":   (30, 60, 220),
    "purple": (130, 40, 190),
    "pink":   (255, 130, 200),
    "white":  (245, 245, 245),
    "black":  (20, 20, 20),
}
COLOUR_NAMES = list(COLOURS)

SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "heart"]

# Nominal radius (half the bounding-box side) in pixels, and jitter.
SIZES = {"small": 8.0, "large": 13.0}
SIZE_JITTER = 0.08            # relative, uniform +-
POS_JITTER = 2.0              # pixels, uniform +-

# Anchor centres (x, y) in pixels and the caption phrase of each position.
POSITIONS = {
    "left":         ((14, 32), "on the left"),
    "right":        ((50, 32), "on the right"),
    "top":          ((32, 14), "at the top"),
    "bottom":       ((32, 50), "at the bottom"),
    "center":       ((32, 32), "in the center"),
    "top left":     ((14, 14), "at the top left"),
    "top right":    ((50, 14), "at the top right"),
    "bottom left":  ((14, 50), "at the bottom left"),
    "bottom right": ((50, 50), "at the bottom right"),
}
POSITION_NAMES = list(POSITIONS)

# (colour, shape) pairs that never occur in training (eval split "novel").
HELDOUT_PAIRS = {("red", "star"), ("blue", "heart"), ("green", "triangle"),
                 ("yellow", "cross"), ("purple", "ring")}

P_TWO_OBJECTS = 0.5
P_SPLIT_BACKGROUND = 0.3

STREAM_TRAIN, STREAM_EVAL_SINGLE, STREAM_EVAL_DOUBLE, STREAM_EVAL_NOVEL = 0, 1, 2, 3


# --------------------------------------------------------------------------
# Drawing

def _star(cx, cy, r):
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _heart(cx, cy, r):
    pts = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x, y))
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    sx = (max(xs) - min(xs)) / 2
    sy = (max(ys) - min(ys)) / 2
    my = (max(ys) + min(ys)) / 2
    s = r / max(sx, sy)
    return [(cx + x * s, cy + (y - my) * s) for x, y in pts]


def shape_mask(shape, cx, cy, r, size=SIZE):
    """Coverage mask in [0, 1], float32 (size, size), of `shape` centred at
    (cx, cy) pixels with half-extent r pixels, antialiased by 4x supersampling."""
    S = size * SS
    img = Image.new("L", (S, S), 0)
    d = ImageDraw.Draw(img)
    X, Y, R = cx * SS, cy * SS, r * SS
    if shape == "circle":
        d.ellipse([X - R, Y - R, X + R, Y + R], fill=255)
    elif shape == "ring":
        d.ellipse([X - R, Y - R, X + R, Y + R], fill=255)
        ri = R * 0.55
        d.ellipse([X - ri, Y - ri, X + ri, Y + ri], fill=0)
    elif shape == "square":
        q = R * 0.9
        d.rectangle([X - q, Y - q, X + q, Y + q], fill=255)
    elif shape == "triangle":
        d.polygon([(X, Y - R), (X + R, Y + R * 0.85), (X - R, Y + R * 0.85)], fill=255)
    elif shape == "star":
        d.polygon(_star(X, Y + R * 0.1, R * 1.05), fill=255)
    elif shape == "cross":
        w = R * 0.36
        d.rectangle([X - w, Y - R, X + w, Y + R], fill=255)
        d.rectangle([X - R, Y - w, X + R, Y + w], fill=255)
    elif shape == "heart":
        d.polygon(_heart(X, Y, R), fill=255)
    else:
        raise ValueError(shape)
    m = img.resize((size, size), Image.BOX)
    return np.asarray(m, dtype=np.float32) / 255.0


def background_image(bg, size=SIZE):
    """float32 (size, size, 3) in [0, 255] for a background spec."""
    out = np.empty((size, size, 3), np.float32)
    c = bg["colours"]
    out[:] = COLOURS[c[0]]
    if bg["split"] == "horizontal":      # first colour top half, second bottom half
        out[size // 2:] = COLOURS[c[1]]
    elif bg["split"] == "vertical":      # first colour left half, second right half
        out[:, size // 2:] = COLOURS[c[1]]
    return out


def render(spec, size=SIZE):
    """uint8 (size, size, 3) image of a spec; fills each object's 'bbox'
    ([x0, y0, x1, y1), pixels where coverage >= 0.5) in place."""
    img = background_image(spec["background"], size)
    for ob in spec["objects"]:
        m = shape_mask(ob["shape"], ob["center"][0], ob["center"][1], ob["radius"], size)
        img = img * (1 - m[..., None]) + np.asarray(COLOURS[ob["colour"]], np.float32) * m[..., None]
        ys, xs = np.nonzero(m >= 0.5)
        ob["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Specs and captions

def _a(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def caption_of(spec):
    parts = []
    for ob in spec["objects"]:
        parts.append("a %s %s %s %s" % (ob["size"], ob["colour"], ob["shape"],
                                        POSITIONS[ob["position"]][1]))
    bg = spec["background"]
    c = bg["colours"]
    if bg["split"] is None:
        tail = "on %s background" % _a(c[0])
    elif bg["split"] == "horizontal":
        tail = "on %s background with %s bottom half" % (_a(c[0]), _a(c[1]))
    else:
        tail = "on %s background with %s right half" % (_a(c[0]), _a(c[1]))
    return " and ".join(parts) + " " + tail


def _bbox_est(ob):
    (x, y), r = ob["center"], ob["radius"]
    return (x - r, y - r, x + r, y + r)


def _overlap(a, b, margin=1.5):
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or
                a[3] + margin <= b[1] or b[3] + margin <= a[1])


def sample_spec(rng, n_objects=None, want_heldout=False):
    """One random spec. want_heldout=False: no object uses a HELDOUT_PAIRS
    (colour, shape) pair; True: at least one object does."""
    while True:
        if n_objects is None:
            n = 2 if rng.random() < P_TWO_OBJECTS else 1
        else:
            n = n_objects
        if rng.random() < P_SPLIT_BACKGROUND:
            bc = rng.choice(len(COLOUR_NAMES), 2, replace=False)
            bg = {"kind": "split", "colours": [COLOUR_NAMES[bc[0]], COLOUR_NAMES[bc[1]]],
                  "split": "horizontal" if rng.random() < 0.5 else "vertical"}
        else:
            bg = {"kind": "plain", "colours": [COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]],
                  "split": None}
        allowed = [c for c in COLOUR_NAMES if c not in bg["colours"]]
        objs = []
        ok = True
        for _ in range(n):
            for _attempt in range(50):
                shape = SHAPES[rng.integers(len(SHAPES))]
                colour = allowed[rng.integers(len(allowed))]
                size = "small" if rng.random() < 0.5 else "large"
                pos = POSITION_NAMES[rng.integers(len(POSITION_NAMES))]
                r = SIZES[size] * (1 + SIZE_JITTER * (2 * rng.random() - 1))
                ax, ay = POSITIONS[pos][0]
                cx = ax + POS_JITTER * (2 * rng.random() - 1)
                cy = ay + POS_JITTER * (2 * rng.random() - 1)
                cx = min(max(cx, r + 0.5), SIZE - 0.5 - r)    # keep inside the frame
                cy = min(max(cy, r + 0.5), SIZE - 0.5 - r)
                ob = {"shape": shape, "colour": colour, "size": size, "position": pos,
                      "center": [round(cx, 3), round(cy, 3)], "radius": round(r, 3)}
                if any(o["position"] == pos or _overlap(_bbox_est(o), _bbox_est(ob)) or
                       (o["shape"], o["colour"]) == (shape, colour) for o in objs):
                    continue
                objs.append(ob)
                break
            else:
                ok = False
                break
        if not ok:
            continue
        has_heldout = any((o["colour"], o["shape"]) in HELDOUT_PAIRS for o in objs)
        if has_heldout != want_heldout:
            continue
        spec = {"background": bg, "objects": objs}
        spec["caption"] = caption_of(spec)
        return spec


def _eval_stream(seed, stream, count, n_objects, want_heldout, taken):
    out = []
    i = 0
    while len(out) < count:
        rng = np.random.default_rng([seed, stream, i])
        i += 1
        spec = sample_spec(rng, n_objects=n_objects, want_heldout=want_heldout)
        if spec["caption"] in taken:
            continue
        taken.add(spec["caption"])
        spec["split"] = {STREAM_EVAL_SINGLE: "single", STREAM_EVAL_DOUBLE: "double",
                         STREAM_EVAL_NOVEL: "novel"}[stream]
        out.append(spec)
    return out


def eval_specs(seed=0, n_single=150, n_double=150, n_novel=60):
    """The held-out evaluation prompts with metadata (bboxes filled by
    rendering). Depends only on `seed` and the counts."""
    taken = set()
    specs = (_eval_stream(seed, STREAM_EVAL_SINGLE, n_single, 1, False, taken) +
             _eval_stream(seed, STREAM_EVAL_DOUBLE, n_double, 2, False, taken) +
             _eval_stream(seed, STREAM_EVAL_NOVEL, n_novel, None, True, taken))
    for s in specs:
        render(s)     # fills bboxes of the target layout
    return specs


def train_spec(seed, i, excluded):
    """Training sample i: redrawn (same rng, deterministic) until its caption
    is not an evaluation caption. Never contains a HELDOUT_PAIRS pair."""
    rng = np.random.default_rng([seed, STREAM_TRAIN, i])
    while True:
        spec = sample_spec(rng, want_heldout=False)
        if spec["caption"] not in excluded:
            return spec


def make_training_set(seed, n, log=None):
    """(images uint8 (n, 64, 64, 3), captions list, specs list)."""
    excluded = {s["caption"] for s in eval_specs(seed)}
    imgs = np.empty((n, SIZE, SIZE, 3), np.uint8)
    caps, specs = [], []
    for i in range(n):
        spec = train_spec(seed, i, excluded)
        imgs[i] = render(spec)
        caps.append(spec["caption"])
        specs.append(spec)
        if log and (i + 1) % 5000 == 0:
            log("  dataset: %d / %d images" % (i + 1, n))
    return imgs, caps, specs


def grid(images, cols, scale=2):
    """uint8 grid image from a list of HxWx3 uint8 arrays."""
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    out = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        out[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = im
    return Image.fromarray(out).resize((out.shape[1] * scale, out.shape[0] * scale), Image.NEAREST)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview", help="write a PNG grid of the first 32 training images")
    ap.add_argument("--eval-json", help="write the held-out evaluation prompts + metadata")
    a = ap.parse_args()
    if a.preview:
        imgs, caps, _ = make_training_set(a.seed, 32)
        grid(list(imgs), 8, scale=3).save(a.preview)
        for c in caps[:32]:
            print(c)
    if a.eval_json:
        specs = eval_specs(a.seed)
        with open(a.eval_json, "w") as f:
            json.dump({"seed": a.seed, "prompts": specs}, f, indent=1)
        print("wrote %d evaluation prompts" % len(specs))


if __name__ == "__main__":
    main()
