"""Context.generate: sizes, counts, modes, seeds, the numpy path, argument
errors and closed contexts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FAST

import diffuse
from diffuse import _images

PIL = pytest.importorskip("PIL.Image")


def test_native_size_default_sampler(ctx: diffuse.Context) -> None:
    images = ctx.generate("a red circle", steps=2, guidance=1.0, seed=3)
    assert len(images) == 1
    img = images[0]
    assert isinstance(img, PIL.Image) and img.mode == "RGB" and img.size == (64, 64)
    assert img.info["seed"] == 3


def test_size_is_width_height_and_n_images(ctx: diffuse.Context) -> None:
    images = ctx.generate("a blue square", n=2, size=(48, 32), seed=5, steps=2, guidance=1.0, sampler="euler")
    assert [im.size for im in images] == [(48, 32), (48, 32)]
    assert [im.info["seed"] for im in images] == [5, 6]
    assert [im.mode for im in images] == ["RGB", "RGB"]


def test_guidance_negative_prompt_rescale_clip_skip(ctx: diffuse.Context) -> None:
    (img,) = ctx.generate(
        "a cat", negative_prompt="blurry", size=32, steps=2, guidance=5.0, guidance_rescale=0.7,
        sampler="DPM++ 2M", clip_skip=1, seed=1,
    )
    assert img.size == (32, 32)


def test_rgba_mode(ctx: diffuse.Context) -> None:
    (img,) = ctx.generate("x", mode="RGBA", **FAST)
    assert img.mode == "RGBA"
    assert np.all(np.asarray(img)[..., 3] == 255)


def test_same_seed_same_pixels(ctx: diffuse.Context) -> None:
    a = np.asarray(ctx.generate("a tree", seed=42, **FAST)[0])
    b = np.asarray(ctx.generate("a tree", seed=42, **FAST)[0])
    c = np.asarray(ctx.generate("a tree", seed=43, **FAST)[0])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # image i of a batch uses seed + i
    batch = ctx.generate("a tree", seed=42, n=2, **FAST)
    assert np.array_equal(np.asarray(batch[0]), a) and np.array_equal(np.asarray(batch[1]), c)


def test_numpy_when_pillow_is_missing(ctx: diffuse.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = np.asarray(ctx.generate("a house", seed=7, **FAST)[0])
    monkeypatch.setattr(_images, "_PILImage", None)
    assert not diffuse.have_pillow()
    images = ctx.generate("a house", seed=7, n=2, **FAST)
    assert all(isinstance(a, np.ndarray) for a in images)
    arr = images[0]
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8 and arr.flags.writeable
    assert np.array_equal(arr, ref)
    assert ctx.generate("a house", seed=7, mode="RGBA", **FAST)[0].shape == (32, 32, 4)
    with pytest.raises(ImportError, match="Pillow"):
        ctx.generate("a house", return_numpy=False, **FAST)


def test_return_numpy_with_pillow_present(ctx: diffuse.Context) -> None:
    (arr,) = ctx.generate("a house", return_numpy=True, **FAST)
    assert isinstance(arr, np.ndarray) and arr.shape == (32, 32, 3)


def test_random_seed(ctx: diffuse.Context) -> None:
    (img,) = ctx.generate("x", seed=None, **FAST)
    assert 0 <= img.info["seed"] < 2**63


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(size=(30, 30)), "multiples of 8"),
        (dict(n=0), "n_images"),
        (dict(n=17), "n_images"),
        (dict(steps=0), "steps"),
        (dict(guidance=-1.0), "guidance"),
        (dict(guidance_rescale=2.0), "guidance_rescale"),
        (dict(n=-1), "out of range"),
        (dict(seed=-1), "seed"),
    ],
)
def test_invalid_arguments(ctx: diffuse.Context, kwargs: dict, match: str) -> None:
    args = dict(FAST, **kwargs)
    with pytest.raises(diffuse.InvalidArgumentError, match=match) as err:
        ctx.generate("x", **args)
    assert err.value.status == diffuse.Status.INVALID_ARGUMENT
    assert isinstance(err.value, ValueError)
    # the context stays usable after a failed call
    assert ctx.generate("x", **FAST)[0].size == (32, 32)


def test_python_level_argument_errors(ctx: diffuse.Context) -> None:
    with pytest.raises(ValueError, match="sampler"):
        ctx.generate("x", **dict(FAST, sampler="bogus"))
    with pytest.raises(ValueError, match="NUL"):
        ctx.generate("a\0b", **FAST)
    with pytest.raises(TypeError):
        ctx.generate("x", **dict(FAST, steps=2.5))
    with pytest.raises(ValueError, match="mode"):
        ctx.generate("x", mode="CMYK", **FAST)


def test_sampler_names() -> None:
    parse = diffuse.enums.parse_sampler
    assert parse("euler_a") is parse("Euler-A") is diffuse.Sampler.EULER_A
    assert parse("DPM++ 2M Karras") is diffuse.Sampler.DPMPP_2M_KARRAS
    assert parse(diffuse.Sampler.UNIPC) is diffuse.Sampler.UNIPC and parse(1) is diffuse.Sampler.DDIM


def test_devices(model: diffuse.Model) -> None:
    assert diffuse.enums.parse_device("cuda:1") == (diffuse.Device.CUDA, 1)
    with pytest.raises(ValueError):
        diffuse.enums.parse_device("cpu:1")
    try:
        c = diffuse.Context(model, device="cuda")
    except diffuse.DeviceError as e:  # no GPU or no CUDA module: a status, never a crash
        assert e.status == diffuse.Status.NO_DEVICE and "CUDA" in e.message
    else:
        c.close()


def test_closed_context_raises(model: diffuse.Model) -> None:
    c = diffuse.Context(model, threads=1)
    c.close()
    c.close()  # idempotent
    assert c.closed
    with pytest.raises(diffuse.ClosedError) as err:
        c.generate("x", **FAST)
    assert err.value.status == diffuse.Status.INVALID_ARGUMENT
    with pytest.raises(diffuse.ClosedError):
        c.edit(np.zeros((32, 32, 4), np.uint8), "x")
    with pytest.raises(diffuse.ClosedError):
        c.variation(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(diffuse.ClosedError):
        with c:
            pass


def test_context_manager_closes(model: diffuse.Model) -> None:
    with diffuse.Context(model, threads=1) as c:
        assert not c.closed
    assert c.closed
