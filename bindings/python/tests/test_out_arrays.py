"""Since 0.3: ``out=`` on generate / edit / variation and their jobs: the
library writes the images into caller numpy arrays (C-contiguous or
row-strided), which are then returned; the pixels equal a normal call's."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from conftest import FAST

import diffuse

H, W = 32, 48
#: FAST without size, for edit and variation (their size is the input's)
EV = {k: v for k, v in FAST.items() if k != "size"}


def _picture(alpha: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(H, W, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        img[..., 3] = 255
        img[8:24, 16:32, 3] = 0
    return img


def test_generate_out_matches_normal_call(ctx: diffuse.Context) -> None:
    expected = ctx.generate("a red circle", n=2, seed=7, return_numpy=True, **FAST)
    out = [np.full((32, 32, 3), 17, np.uint8) for _ in range(2)]
    got = ctx.generate("a red circle", seed=7, out=out, **FAST)
    assert len(got) == 2 and got[0] is out[0] and got[1] is out[1]  # the arrays themselves
    for a, e in zip(out, expected):
        assert np.array_equal(a, e)
    assert not np.array_equal(out[0], out[1])  # seed + i


def test_generate_out_rgba_row_strided_and_size_from_out(ctx: diffuse.Context) -> None:
    (expected,) = ctx.generate("x", seed=3, mode="RGBA", return_numpy=True, **dict(FAST, size=None))
    h, w = expected.shape[:2]
    big = np.full((h + 4, w + 16, 4), 9, np.uint8)
    view = big[2 : 2 + h, 8 : 8 + w]  # rows further apart than w * 4 bytes
    assert not view.flags.c_contiguous
    (got,) = ctx.generate("x", seed=3, out=view, **dict(FAST, size=None))  # size taken from out
    assert got is view
    assert np.array_equal(view, expected)
    # nothing outside the view was written
    mask = np.ones(big.shape[:2], bool)
    mask[2 : 2 + h, 8 : 8 + w] = False
    assert (big[mask] == 9).all()


def test_out_as_one_4d_array(ctx: diffuse.Context) -> None:
    expected = ctx.generate("y", n=3, seed=11, return_numpy=True, **FAST)
    batch = np.zeros((3, 32, 32, 3), np.uint8)
    ctx.generate("y", seed=11, out=batch, **FAST)
    assert np.array_equal(batch, np.stack(expected))


def test_edit_and_variation_out(ctx: diffuse.Context) -> None:
    picture = _picture(alpha=True)
    expected = ctx.edit(picture, "a door", n=2, seed=5, return_numpy=True, **EV)
    out = np.zeros((2, H, W, 3), np.uint8)
    got = ctx.edit(picture, "a door", seed=5, out=out, **EV)
    assert len(got) == 2 and np.array_equal(out, np.stack(expected))

    rgb = _picture()
    (expected_v,) = ctx.variation(rgb, seed=2, return_numpy=True, **EV)
    out_v = np.zeros((H, W, 3), np.uint8)
    (got_v,) = ctx.variation(rgb, seed=2, out=out_v, **EV)
    assert got_v is out_v and np.array_equal(out_v, expected_v)


def test_job_writes_into_out_and_keeps_it_alive(ctx: diffuse.Context) -> None:
    (expected,) = ctx.generate("z", seed=4, return_numpy=True, **dict(FAST, steps=6))
    out = np.zeros((32, 32, 3), np.uint8)
    alive = weakref.ref(out)
    job = ctx.start_generate("z", seed=4, out=[out], **dict(FAST, steps=6))
    del out  # the caller's references may go: the job holds the arrays
    gc.collect()
    assert alive() is not None
    with job:
        (got,) = job.result()
    assert got is alive() and np.array_equal(got, expected)
    del got, job
    gc.collect()
    assert alive() is None  # and lets go with the job

    # an edit job too: its input is copied at start, its output is not
    picture = _picture(alpha=True)
    (expected_e,) = ctx.edit(picture, "a door", seed=8, return_numpy=True, **EV)
    with ctx.start_edit(picture, "a door", seed=8, out=np.zeros((H, W, 4), np.uint8), **EV) as job:
        (got_e,) = job.result()
    assert got_e.shape == (H, W, 4) and np.array_equal(got_e[..., :3], expected_e)
    assert (got_e[..., 3] == 255).all()


def test_out_errors(ctx: diffuse.Context) -> None:
    with pytest.raises(TypeError, match="uint8"):
        ctx.generate("x", out=np.zeros((32, 32, 3), np.float32), **FAST)
    with pytest.raises(ValueError, match="shape"):
        ctx.generate("x", out=np.zeros((32, 32, 2), np.uint8), **FAST)
    with pytest.raises(ValueError, match="strides"):
        ctx.generate("x", out=np.zeros((32, 64, 3), np.uint8)[:, ::2], **FAST)  # pixels not packed
    with pytest.raises(ValueError, match="strides"):
        ctx.generate("x", out=np.zeros((32, 32, 3), np.uint8)[::-1], **FAST)  # rows bottom to top
    ro = np.zeros((32, 32, 3), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ctx.generate("x", out=ro, **FAST)
    with pytest.raises(diffuse.InvalidArgumentError, match="out holds 2"):
        ctx.generate("x", n=3, out=[np.zeros((32, 32, 3), np.uint8)] * 2, **FAST)
    with pytest.raises(ValueError, match="out\\[1\\]"):
        ctx.generate("x", out=[np.zeros((32, 32, 3), np.uint8), np.zeros((16, 32, 3), np.uint8)], **FAST)
    # the library checks the size against the output size
    with pytest.raises(diffuse.InvalidArgumentError, match="output_images"):
        ctx.generate("x", out=np.zeros((16, 16, 3), np.uint8), **dict(FAST, size=(32, 32)))
    with pytest.raises(diffuse.InvalidArgumentError, match="output_images"):
        ctx.variation(_picture(), out=np.zeros((32, 32, 3), np.uint8), **EV)
    assert ctx.generate("x", **FAST)[0].size == (32, 32)  # still usable
