"""Context.edit and Context.variation: inputs as PIL images, numpy arrays and
paths; masks by alpha or as a separate image; argument errors.

The edit and variation pipelines are being finished in the C library; until
they land the calls return DIFFUSE_ERR_UNSUPPORTED after checking their
arguments. These tests accept either a correct result or exactly that
status, so they pass before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

import numpy as np
import pytest

import diffuse

FAST = dict(steps=2, guidance=1.0, sampler="euler")
H, W = 32, 48


def _picture(alpha: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(H, W, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        img[..., 3] = 255
        img[8:24, 16:32, 3] = 0  # the hole to repaint
    return img


def _done_or_unsupported(call: Callable[[], List[Any]], n: int, size: tuple) -> Optional[List[np.ndarray]]:
    """The images as arrays, after checking count and (width, height); None
    when the library does not run this pipeline yet (UNSUPPORTED)."""
    try:
        images = call()
    except diffuse.UnsupportedError as e:
        assert e.status == diffuse.Status.UNSUPPORTED
        return None
    assert len(images) == n
    arrays = [np.asarray(im) for im in images]
    for a in arrays:
        assert (a.shape[1], a.shape[0]) == size and a.dtype == np.uint8
    return arrays


def test_edit_with_alpha_mask(ctx: diffuse.Context) -> None:
    picture = _picture(alpha=True)
    out = _done_or_unsupported(lambda: ctx.edit(picture, "a door", n=2, return_numpy=True, **FAST), 2, (W, H))
    if out is not None:  # pixels outside the hole come back unchanged
        keep = picture[..., 3] == 255
        for a in out:
            assert np.array_equal(a[keep], picture[..., :3][keep])
            assert not np.array_equal(a[~keep], picture[..., :3][~keep])


def test_edit_with_separate_mask_and_pil_input(ctx: diffuse.Context) -> None:
    PIL = pytest.importorskip("PIL.Image")
    image = PIL.fromarray(_picture())
    mask = np.zeros((H, W), np.bool_)
    mask[8:24, 16:32] = True  # white = edit
    out = _done_or_unsupported(lambda: ctx.edit(image, "a door", mask=mask, strength=0.8, **FAST), 1, (W, H))
    if out is not None:
        assert np.array_equal(out[0][~mask], _picture()[~mask])


def test_variation_from_array_and_path(ctx: diffuse.Context, tmp_path: Path) -> None:
    _done_or_unsupported(lambda: ctx.variation(_picture(), n=2, strength=0.5, **FAST), 2, (W, H))
    PIL = pytest.importorskip("PIL.Image")
    path = tmp_path / "in.png"
    PIL.fromarray(_picture()).save(path)
    _done_or_unsupported(lambda: ctx.variation(path, prompt="autumn", return_numpy=True, **FAST), 1, (W, H))


def test_edit_argument_errors(ctx: diffuse.Context) -> None:
    # no mask and no alpha: the library refuses before running anything
    with pytest.raises(diffuse.InvalidArgumentError, match="alpha"):
        ctx.edit(_picture(), "x", **FAST)
    with pytest.raises(diffuse.InvalidArgumentError, match="mask is"):
        ctx.edit(_picture(), "x", mask=np.zeros((8, 8), np.uint8), **FAST)
    with pytest.raises(diffuse.InvalidArgumentError, match="strength"):
        ctx.edit(_picture(alpha=True), "x", strength=1.5, **FAST)


def test_variation_argument_errors(ctx: diffuse.Context) -> None:
    with pytest.raises(diffuse.InvalidArgumentError, match="strength"):
        ctx.variation(_picture(), strength=2.0, **FAST)
    with pytest.raises(TypeError, match="uint8"):
        ctx.variation(_picture().astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        ctx.variation(np.zeros((H, W, 2), np.uint8))
    with pytest.raises(TypeError):
        ctx.variation([[1, 2], [3, 4]])  # type: ignore[arg-type]


def test_path_input_without_pillow(ctx: diffuse.Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from diffuse import _images

    monkeypatch.setattr(_images, "_PILImage", None)
    with pytest.raises(ImportError, match="Pillow"):
        ctx.variation(tmp_path / "in.png")


def test_input_conversions() -> None:
    from diffuse import _images

    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    rgb = _images.to_array(gray, "image")
    assert rgb.shape == (H, W, 3) and np.array_equal(rgb[..., 1], gray)
    mask = _images.to_array(np.dstack([gray, gray, gray, np.zeros_like(gray)]), "mask", mask=True)
    assert mask.shape == (H, W, 3) and np.array_equal(mask[..., 0], gray)  # alpha ignored: luminance
    strided = _picture()[:, ::2]  # not contiguous
    c = _images.c_image(_images.to_array(strided, "image"))
    assert (c.width, c.height, c.stride) == (W // 2, H, W // 2 * 3)
