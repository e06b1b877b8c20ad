"""Image conversion between Python and diffuse_image.

Inputs may be PIL images, numpy uint8 arrays (H, W), (H, W, 1), (H, W, 3) or
(H, W, 4), or paths (read with Pillow). Outputs are PIL images when Pillow
is importable and numpy uint8 arrays of shape (H, W, 3 or 4) otherwise, or
as the caller asks with ``return_numpy``.
"""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from .enums import PixelFormat

try:  # Pillow is optional; tests set this to None to take the numpy path.
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - exercised through monkeypatching
    _PILImage = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    ImageInput = Union[PILImage, np.ndarray, str, os.PathLike]
    ImageOutput = Union[PILImage, np.ndarray]
else:
    ImageInput = Any
    ImageOutput = Any


def have_pillow() -> bool:
    """True when Pillow is importable (outputs default to PIL images)."""
    return _PILImage is not None


def _need_pillow(why: str):
    if _PILImage is None:
        raise ImportError(f"{why} needs Pillow (pip install pillow)")
    return _PILImage


def _is_pil(obj: Any) -> bool:
    return _PILImage is not None and isinstance(obj, _PILImage.Image)


def _pil_to_array(img: Any, mask: bool) -> np.ndarray:
    """A PIL image as (H, W, 3|4) uint8: RGBA when it carries alpha (and is
    not a mask), grayscale for masks (white = edit), RGB otherwise."""
    if mask:
        return np.asarray(img.convert("L"), dtype=np.uint8)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    return np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)


def to_array(image: ImageInput, what: str, mask: bool = False) -> np.ndarray:
    """*image* as a C-contiguous uint8 array (H, W, 3) or (H, W, 4).

    Masks become grayscale replicated to RGB, so "white = edit" holds
    whatever the input's channels were.
    """
    if isinstance(image, (str, os.PathLike)):
        pil = _need_pillow(f"reading {what} from a file")
        with pil.open(os.fspath(image)) as img:
            img.load()
            arr = _pil_to_array(img, mask)
    elif _is_pil(image):
        arr = _pil_to_array(image, mask)
    elif isinstance(image, np.ndarray):
        arr = image
        if mask and arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        if arr.dtype != np.uint8:
            raise TypeError(
                f"{what}: numpy arrays must be uint8 (0..255), got {arr.dtype}; "
                "scale and convert with .astype(np.uint8)"
            )
        if mask and arr.ndim == 3 and arr.shape[2] in (3, 4):
            # luminance of the colour channels (alpha ignored), as PIL's "L"
            rgb = arr[..., :3].astype(np.uint32)
            arr = ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)
    else:
        raise TypeError(f"{what} must be a PIL image, a numpy uint8 array or a path, not {type(image).__name__}")

    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{what}: expected shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty ({arr.shape[1]}x{arr.shape[0]})")
    return np.ascontiguousarray(arr)


def c_image(arr: np.ndarray) -> _lib.diffuse_image:
    """A diffuse_image viewing *arr* (from to_array). The caller keeps *arr*
    alive for as long as the C struct is used."""
    h, w, c = arr.shape
    im = _lib.diffuse_image()
    im.width, im.height, im.stride = w, h, w * c
    im.format = PixelFormat.RGB8 if c == 3 else PixelFormat.RGBA8
    im.origin = 0  # top-left: numpy and PIL rows run top to bottom
    im.color_space = 0  # sRGB, what image files hold
    im.data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
    return im


_CHANNELS = {PixelFormat.RGB8: 3, PixelFormat.RGBA8: 4, PixelFormat.BGRA8: 4}


def from_c_image(im: _lib.diffuse_image, seed: Optional[int], pil: Any) -> ImageOutput:
    """Copies one library-owned image out: a PIL image (with ``info["seed"]``
    when *seed* is not None) when *pil* is the PIL.Image module, else a
    numpy uint8 array (H, W, 3|4)."""
    c = _CHANNELS[PixelFormat(im.format)]
    h, w, stride = im.height, im.width, im.stride
    raw = ctypes.string_at(im.data, stride * h)
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(h, stride)[:, : w * c].reshape(h, w, c)
    if im.format == PixelFormat.BGRA8:
        arr = arr[..., [2, 1, 0, 3]]
    if im.origin == 1:  # bottom-left
        arr = arr[::-1]
    arr = np.array(arr)  # own, writable, contiguous
    if pil is None:
        return arr
    img = pil.frombytes("RGB" if c == 3 else "RGBA", (w, h), arr.tobytes())
    if seed is not None:
        img.info["seed"] = seed
    return img


def pil_for_output(return_numpy: Optional[bool]) -> Any:
    """The PIL.Image module when outputs should be PIL images, else None
    (``return_numpy`` None = PIL when Pillow is installed)."""
    if return_numpy is None:
        return_numpy = _PILImage is None
    return None if return_numpy else _need_pillow("returning PIL images (or pass return_numpy=True)")


def from_c_images(images: _lib.diffuse_images, return_numpy: Optional[bool]) -> List[ImageOutput]:
    """Copies library-owned images out (the caller frees them afterwards)."""
    pil = pil_for_output(return_numpy)
    out: List[ImageOutput] = []
    for i in range(images.count):
        seed = int(images.seeds[i]) if images.seeds else None
        out.append(from_c_image(images.images[i], seed, pil))
    return out


def output_format(mode: str) -> Tuple[PixelFormat, str]:
    """The pixel format for an output *mode* ("RGB" or "RGBA")."""
    m = mode.upper()
    if m == "RGB":
        return PixelFormat.RGB8, m
    if m == "RGBA":
        return PixelFormat.RGBA8, m
    raise ValueError(f"mode must be 'RGB' or 'RGBA', not {mode!r}")


#: What ``out=`` accepts: one (H, W, C) array, an (N, H, W, C) array, or a
#: sequence of (H, W, C) arrays.
OutArrays = Union[np.ndarray, Sequence[np.ndarray]]


def out_arrays(out: OutArrays) -> List[np.ndarray]:
    """The caller's output arrays of ``out=``, one per image, checked to be
    writable uint8 (H, W, 3|4) arrays whose pixels and channels are packed
    (rows may be further apart: a row-strided view of a larger array)."""
    if isinstance(out, np.ndarray):
        arrays = [out] if out.ndim == 3 else list(out) if out.ndim == 4 else None
        if arrays is None:
            raise ValueError(f"out: expected an array (H, W, 3|4) or (N, H, W, 3|4), got shape {out.shape}")
    elif isinstance(out, Sequence) and not isinstance(out, (str, bytes)):
        arrays = list(out)
    else:
        raise TypeError(f"out must be a numpy uint8 array or a sequence of them, not {type(out).__name__}")
    if not arrays:
        raise ValueError("out holds no arrays")
    for i, a in enumerate(arrays):
        what = f"out[{i}]"
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what} must be a numpy uint8 array, not {type(a).__name__}")
        if a.dtype != np.uint8:
            raise TypeError(f"{what} must be uint8, not {a.dtype}")
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"{what}: expected shape (H, W, 3) or (H, W, 4), got {a.shape}")
        h, w, c = a.shape
        if h == 0 or w == 0:
            raise ValueError(f"{what} is empty ({w}x{h})")
        if not a.flags.writeable:
            raise ValueError(f"{what} is read-only")
        if a.strides[2] != 1 or a.strides[1] != c or a.strides[0] < w * c:
            raise ValueError(
                f"{what}: pixels must be packed with rows top to bottom (strides (>= {w * c}, {c}, 1)), "
                f"got strides {a.strides}; pass a C-contiguous array or a row slice of one"
            )
        if a.strides[0] > 0xFFFFFFFF:
            raise ValueError(f"{what}: row stride {a.strides[0]} too large")
    shape0 = arrays[0].shape[:2]
    for i, a in enumerate(arrays[1:], 1):
        if a.shape[:2] != shape0:
            raise ValueError(f"out[{i}] is {a.shape[1]}x{a.shape[0]}, out[0] {shape0[1]}x{shape0[0]}")
    return arrays


def c_out_images(arrays: List[np.ndarray]) -> Any:
    """A C array of diffuse_image viewing *arrays* (from out_arrays), for
    the params' ``output_images``. The caller keeps both alive while the
    library may write (for a job: until it has finished)."""
    images = (_lib.diffuse_image * len(arrays))()
    for im, a in zip(images, arrays):
        h, w, c = a.shape
        im.width, im.height, im.stride = w, h, a.strides[0]
        im.format = PixelFormat.RGB8 if c == 3 else PixelFormat.RGBA8
        im.origin = 0  # top-left
        im.color_space = 0  # sRGB
        im.data = a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
    return images
