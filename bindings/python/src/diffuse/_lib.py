"""ctypes mirror of include/diffuse.h, and the code that finds libdiffuse.

Every public struct, enum, callback type and function of the C ABI is
declared here, field for field in header order (tests/test_abi.py compiles
the header and compares sizes and offsets). Nothing else in the package
touches ctypes declarations directly; the rest goes through ``lib()``.

The library is found, in this order:

1. ``DIFFUSE_LIBRARY``: a path to the shared object, or to a folder that
   holds ``libdiffuse.so.0``. When it is set, it is the only place tried.
2. The installed library: ``libdiffuse.so.0`` through the dynamic loader
   (``LD_LIBRARY_PATH``, the ld.so cache, the default paths), then whatever
   ``ctypes.util.find_library("diffuse")`` names.
3. The build folder of the source tree this package sits in
   (``<repo>/build/libdiffuse.so.0``), for running from a checkout.

When none loads, ``LibraryNotFoundError`` (an ``ImportError``) lists every
place tried and why each failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, Type, TypeVar

#: The ABI major version this binding is written against (DIFFUSE_VERSION_MAJOR).
EXPECTED_MAJOR = 0
#: Oldest MAJOR.MINOR whose functions and struct fields this binding uses.
MINIMUM_VERSION = (0, 3)

# C enums are int-sized on every platform libdiffuse supports; their values
# fit in an int, so ctypes' c_int is the exact type.
c_enum = c_int

# ---------------------------------------------------------------------------
# Opaque handles
# ---------------------------------------------------------------------------


class diffuse_model(Structure):
    """Opaque `diffuse_model` (only ever used through a pointer)."""


class diffuse_ctx(Structure):
    """Opaque `diffuse_ctx` (only ever used through a pointer)."""


class diffuse_job(Structure):
    """Opaque `diffuse_job` (only ever used through a pointer)."""


model_p = POINTER(diffuse_model)
ctx_p = POINTER(diffuse_ctx)
job_p = POINTER(diffuse_job)

# ---------------------------------------------------------------------------
# Structs, in header order
# ---------------------------------------------------------------------------


class diffuse_progress(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("stage", c_enum),
        ("step", c_uint32),
        ("total", c_uint32),
        ("image_index", c_uint32),
        ("image_count", c_uint32),
        ("elapsed_seconds", c_double),
    ]


# void (*diffuse_log_fn)(diffuse_log_level level, const char *message, void *user)
log_fn = CFUNCTYPE(None, c_enum, c_char_p, c_void_p)
# int (*diffuse_progress_fn)(const diffuse_progress *progress, void *user)
progress_fn = CFUNCTYPE(c_int, POINTER(diffuse_progress), c_void_p)


class diffuse_model_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("log_fn", log_fn),
        ("log_user", c_void_p),
        ("log_level", c_enum),
        ("weight_type", c_enum),
        ("error_buf", POINTER(c_char)),
        ("error_buf_size", c_size_t),
        # since 0.3
        ("progress_fn", progress_fn),
        ("progress_user", c_void_p),
    ]


class diffuse_model_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("family", c_enum),
        ("unet_in_channels", c_uint32),
        ("latent_channels", c_uint32),
        ("vae_scale_factor", c_uint32),
        ("sample_size", c_uint32),
        ("text_hidden_size", c_uint32),
        ("text_layers", c_uint32),
        ("v_prediction", c_int32),
        ("unet_parameters", c_uint64),
        ("vae_parameters", c_uint64),
        ("text_encoder_parameters", c_uint64),
        ("weight_bytes", c_uint64),
        # since 0.3
        ("weight_dtype", c_enum),
        ("host_bytes", c_uint64),
    ]


class diffuse_ctx_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("device", c_enum),
        ("device_index", c_int32),
        ("n_threads", c_int32),
        ("precision", c_enum),
        ("log_fn", log_fn),
        ("log_user", c_void_p),
        ("log_level", c_enum),
        ("progress_fn", progress_fn),
        ("progress_user", c_void_p),
        ("memory_budget", c_uint64),
    ]


class diffuse_image(Structure):
    _fields_ = [
        ("width", c_uint32),
        ("height", c_uint32),
        ("stride", c_uint32),
        ("format", c_enum),
        ("origin", c_enum),
        ("color_space", c_enum),
        ("data", POINTER(c_uint8)),
    ]


class diffuse_images(Structure):
    _fields_ = [
        ("count", c_uint32),
        ("images", POINTER(diffuse_image)),
        ("seeds", POINTER(c_uint64)),
    ]


class diffuse_output_format(Structure):
    _fields_ = [
        ("format", c_enum),
        ("origin", c_enum),
        ("color_space", c_enum),
    ]


class diffuse_generate_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("prompt", c_char_p),
        ("negative_prompt", c_char_p),
        ("n_images", c_uint32),
        ("width", c_uint32),
        ("height", c_uint32),
        ("steps", c_uint32),
        ("guidance_scale", c_float),
        ("guidance_rescale", c_float),
        ("sampler", c_enum),
        ("seed", c_uint64),
        ("clip_skip", c_uint32),
        ("output", diffuse_output_format),
        ("tile_x", c_uint32),
        ("tile_y", c_uint32),
        # since 0.3
        ("output_images", POINTER(diffuse_image)),
    ]


class diffuse_edit_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("image", POINTER(diffuse_image)),
        ("mask", POINTER(diffuse_image)),
        ("prompt", c_char_p),
        ("negative_prompt", c_char_p),
        ("n_images", c_uint32),
        ("steps", c_uint32),
        ("guidance_scale", c_float),
        ("strength", c_float),
        ("sampler", c_enum),
        ("seed", c_uint64),
        ("mask_feather", c_float),
        ("output", diffuse_output_format),
        # since 0.3
        ("output_images", POINTER(diffuse_image)),
    ]


class diffuse_variation_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("image", POINTER(diffuse_image)),
        ("prompt", c_char_p),
        ("negative_prompt", c_char_p),
        ("n_images", c_uint32),
        ("steps", c_uint32),
        ("guidance_scale", c_float),
        ("strength", c_float),
        ("sampler", c_enum),
        ("seed", c_uint64),
        ("output", diffuse_output_format),
        # since 0.3
        ("output_images", POINTER(diffuse_image)),
    ]


# void (*diffuse_preview_fn)(const diffuse_image *preview, const diffuse_progress *progress, void *user)
preview_fn = CFUNCTYPE(None, POINTER(diffuse_image), POINTER(diffuse_progress), c_void_p)


class diffuse_job_status(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("state", c_enum),
        ("stage", c_enum),
        ("step", c_uint32),
        ("total", c_uint32),
        ("image_index", c_uint32),
        ("image_count", c_uint32),
        ("elapsed_seconds", c_double),
    ]


class diffuse_memory_query(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("operation", c_enum),
        ("width", c_uint32),
        ("height", c_uint32),
        ("n_images", c_uint32),
        ("guidance_scale", c_float),
        ("format", c_enum),
        ("device", c_enum),
        ("memory_budget", c_uint64),
    ]


class diffuse_memory_estimate(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("model_host_bytes", c_uint64),
        ("context_host_bytes", c_uint64),
        ("run_host_bytes", c_uint64),
        ("output_bytes", c_uint64),
        ("host_bytes", c_uint64),
        ("device_bytes", c_uint64),
        ("vae_tiled", c_int32),
        ("fits", c_int32),
    ]


class diffuse_device_info(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("device", c_enum),
        ("index", c_int32),
        ("available", c_int32),
        ("name", c_char * 128),
        ("memory_bytes", c_uint64),
        ("threads", c_uint32),
        ("note", c_char * 256),
    ]


class diffuse_ctx_memory(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("device", c_enum),
        ("memory_budget", c_uint64),
        ("host_bytes", c_uint64),
        ("device_bytes", c_uint64),
        ("device_peak_bytes", c_uint64),
    ]


#: The parameter structs with a ``*_params_init`` function, by C name.
PARAMS_STRUCTS = {
    "diffuse_model_params": diffuse_model_params,
    "diffuse_ctx_params": diffuse_ctx_params,
    "diffuse_generate_params": diffuse_generate_params,
    "diffuse_edit_params": diffuse_edit_params,
    "diffuse_variation_params": diffuse_variation_params,
    # diffuse_memory_query_init (since 0.3) fills it as the *_params_init do
    "diffuse_memory_query": diffuse_memory_query,
}

#: Every struct of the header, by C name (for the layout test).
ALL_STRUCTS = {
    "diffuse_progress": diffuse_progress,
    "diffuse_model_info": diffuse_model_info,
    "diffuse_image": diffuse_image,
    "diffuse_images": diffuse_images,
    "diffuse_output_format": diffuse_output_format,
    "diffuse_job_status": diffuse_job_status,
    "diffuse_memory_estimate": diffuse_memory_estimate,
    "diffuse_device_info": diffuse_device_info,
    "diffuse_ctx_memory": diffuse_ctx_memory,
    **PARAMS_STRUCTS,
}

# A library with a newer minor version may have grown a params struct; its
# *_params_init() then writes sizeof(its struct) bytes. Params are therefore
# initialised inside a buffer with this much room past our struct, so the
# grown tail lands in memory we own and keeps the library's defaults.
PARAMS_SLACK = 1024


S = TypeVar("S", bound=Structure)


def new_params(struct_type: Type[S], init_fn: Callable[[Any], None]) -> S:
    """A *struct_type* filled by *init_fn* (a ``*_params_init``), with room
    for a newer library's larger struct behind it (see PARAMS_SLACK)."""
    buf = (c_uint8 * (ctypes.sizeof(struct_type) + PARAMS_SLACK))()
    params = struct_type.from_buffer(buf)
    init_fn(ctypes.byref(params))
    if params.struct_size > len(buf):
        raise RuntimeError(
            f"libdiffuse's {struct_type.__name__} is {params.struct_size} bytes, beyond the "
            f"{len(buf)} this binding reserves; upgrade the Python binding"
        )
    return params


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------

_P = POINTER
# name: (restype, argtypes)
FUNCTIONS = {
    "diffuse_version": (c_uint32, []),
    "diffuse_version_string": (c_char_p, []),
    "diffuse_status_string": (c_char_p, [c_enum]),
    "diffuse_model_params_init": (None, [_P(diffuse_model_params)]),
    "diffuse_model_load": (c_enum, [c_char_p, _P(diffuse_model_params), _P(model_p)]),
    "diffuse_model_free": (None, [model_p]),
    "diffuse_model_get_info": (c_enum, [model_p, _P(diffuse_model_info)]),
    "diffuse_tokenize": (c_enum, [model_p, c_char_p, _P(c_int32), c_size_t, _P(c_size_t)]),
    "diffuse_ctx_params_init": (None, [_P(diffuse_ctx_params)]),
    "diffuse_ctx_create": (c_enum, [model_p, _P(diffuse_ctx_params), _P(ctx_p)]),
    "diffuse_ctx_free": (None, [ctx_p]),
    "diffuse_ctx_last_error": (c_char_p, [ctx_p]),
    "diffuse_images_free": (None, [_P(diffuse_images)]),
    "diffuse_generate_params_init": (None, [_P(diffuse_generate_params)]),
    "diffuse_generate": (c_enum, [ctx_p, _P(diffuse_generate_params), _P(_P(diffuse_images))]),
    "diffuse_edit_params_init": (None, [_P(diffuse_edit_params)]),
    "diffuse_edit": (c_enum, [ctx_p, _P(diffuse_edit_params), _P(_P(diffuse_images))]),
    "diffuse_variation_params_init": (None, [_P(diffuse_variation_params)]),
    "diffuse_variation": (c_enum, [ctx_p, _P(diffuse_variation_params), _P(_P(diffuse_images))]),
    # asynchronous jobs (since 0.2): diffuse.Job
    "diffuse_job_start_generate": (c_enum, [ctx_p, _P(diffuse_generate_params), _P(job_p)]),
    "diffuse_job_start_edit": (c_enum, [ctx_p, _P(diffuse_edit_params), _P(job_p)]),
    "diffuse_job_start_variation": (c_enum, [ctx_p, _P(diffuse_variation_params), _P(job_p)]),
    "diffuse_job_poll": (c_enum, [job_p, _P(diffuse_job_status)]),
    "diffuse_job_wait": (c_enum, [job_p, c_uint32]),
    "diffuse_job_cancel": (c_enum, [job_p]),
    "diffuse_job_result": (c_enum, [job_p, _P(_P(diffuse_images))]),
    "diffuse_job_last_error": (c_char_p, [job_p]),
    "diffuse_job_free": (None, [job_p]),
    # fn is a preview_fn (passed through ctypes.cast to c_void_p, so NULL turns previews off)
    "diffuse_ctx_set_preview": (c_enum, [ctx_p, c_void_p, c_void_p, c_uint32]),
    # memory estimates and devices (since 0.3)
    "diffuse_memory_query_init": (None, [_P(diffuse_memory_query)]),
    "diffuse_estimate_memory": (c_enum, [model_p, _P(diffuse_memory_query), _P(diffuse_memory_estimate)]),
    "diffuse_list_devices": (c_enum, [_P(diffuse_device_info), c_size_t, _P(c_size_t)]),
    "diffuse_ctx_get_device": (c_enum, [ctx_p, _P(c_enum), _P(diffuse_device_info)]),
    "diffuse_ctx_set_preview_decode": (c_enum, [ctx_p, c_uint32]),
    "diffuse_ctx_get_memory": (c_enum, [ctx_p, _P(diffuse_ctx_memory)]),
}

# ---------------------------------------------------------------------------
# Finding and loading the library
# ---------------------------------------------------------------------------


class LibraryNotFoundError(ImportError):
    """No usable libdiffuse was found. ``tried`` lists (place, reason) pairs."""

    def __init__(self, message: str, tried: List[Tuple[str, str]]):
        super().__init__(message)
        self.tried = tried


class LibraryVersionError(ImportError):
    """The libdiffuse found has an ABI major version this binding does not speak."""


if sys.platform == "darwin":
    _SONAME = "libdiffuse.0.dylib"
elif sys.platform == "win32":
    _SONAME = "diffuse.dll"
else:
    _SONAME = "libdiffuse.so.0"


def _source_tree_build() -> Optional[Path]:
    """``<repo>/build`` when this file sits in a libdiffuse checkout
    (``<repo>/bindings/python/src/diffuse/_lib.py``), else None."""
    here = Path(__file__).resolve()
    if len(here.parents) < 5:
        return None
    repo = here.parents[4]
    if (repo / "include" / "diffuse.h").is_file():
        return repo / "build"
    return None


def candidates() -> List[Tuple[str, bool]]:
    """The places to try, in order, as (name or path, explicit) pairs.
    ``explicit`` marks DIFFUSE_LIBRARY, which, when set, is the only one."""
    env = os.environ.get("DIFFUSE_LIBRARY")
    if env:
        p = Path(env)
        return [(str(p / _SONAME) if p.is_dir() else env, True)]
    places = [_SONAME]
    found = ctypes.util.find_library("diffuse")
    if found and found != _SONAME:
        places.append(found)
    build = _source_tree_build()
    if build is not None:
        places.append(str(build / _SONAME))
    return [(p, False) for p in places]


class _Library:
    """The loaded shared object with every function prototyped."""

    def __init__(self, dll: ctypes.CDLL, path: str):
        self.dll = dll
        self.path = path
        for name, (restype, argtypes) in FUNCTIONS.items():
            try:
                fn = getattr(dll, name)
            except AttributeError:
                raise OSError(f"{path} does not export {name}(); it is not a complete libdiffuse") from None
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    if TYPE_CHECKING:  # the diffuse_* attributes are set from FUNCTIONS

        def __getattr__(self, name: str) -> Any: ...

    def version(self) -> Tuple[int, int, int]:
        v = int(self.diffuse_version())
        return v // 10000, v // 100 % 100, v % 100


class _DlInfo(Structure):
    _fields_ = [("dli_fname", c_char_p), ("dli_fbase", c_void_p), ("dli_sname", c_char_p), ("dli_saddr", c_void_p)]


def _file_of(dll: ctypes.CDLL) -> Optional[str]:
    """The file the dynamic loader actually opened for *dll* (via dladdr),
    or None where that cannot be asked."""
    if sys.platform == "win32":
        return None
    try:
        libc = ctypes.CDLL(None)
        dladdr = libc.dladdr
    except (OSError, AttributeError):
        return None
    dladdr.argtypes = [c_void_p, POINTER(_DlInfo)]
    dladdr.restype = c_int
    info = _DlInfo()
    addr = ctypes.cast(dll.diffuse_version, c_void_p)
    if not dladdr(addr, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.abspath(os.fsdecode(info.dli_fname))


def _load_from(place: str) -> _Library:
    # CDLL (not PyDLL): ctypes releases the GIL around every call, so
    # contexts on different threads run concurrently.
    dll = ctypes.CDLL(place)
    try:
        version_fn = dll.diffuse_version
    except AttributeError:
        raise OSError(f"{place} does not export diffuse_version(); not libdiffuse") from None
    version_fn.restype = c_uint32
    version_fn.argtypes = []
    v = int(version_fn())
    major, minor, patch = v // 10000, v // 100 % 100, v % 100
    if major != EXPECTED_MAJOR or (major, minor) < MINIMUM_VERSION:
        raise LibraryVersionError(
            f"{place} is libdiffuse {major}.{minor}.{patch}; this binding needs "
            f"{EXPECTED_MAJOR}.x with x >= {MINIMUM_VERSION[1]} (same major = same ABI)"
        )
    return _Library(dll, _file_of(dll) or place)


_lock = threading.Lock()
_loaded: Optional[_Library] = None  # the library once loaded; never unloaded


def lib() -> _Library:
    """The loaded libdiffuse, loading it on first use.

    Raises:
        LibraryNotFoundError: nothing loaded; the message lists each place tried.
        LibraryVersionError: a library loaded, but with another ABI major.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        tried: List[Tuple[str, str]] = []
        version_error: Optional[LibraryVersionError] = None
        for place, explicit in candidates():
            if not explicit and os.sep in place and not os.path.exists(place):
                tried.append((place, "not present"))
                continue
            try:
                _loaded = _load_from(place)
                return _loaded
            except LibraryVersionError as e:
                version_error = version_error or e
                tried.append((place, str(e)))
            except OSError as e:
                tried.append((place, str(e)))
        if version_error is not None and len(tried) == 1:
            raise version_error
        lines = "\n".join(f"  {p}: {why}" for p, why in tried)
        hint = (
            "set DIFFUSE_LIBRARY to the path of libdiffuse.so.0, install libdiffuse "
            "(meson install), or build it into <repo>/build"
        )
        raise LibraryNotFoundError(f"could not load libdiffuse; tried:\n{lines}\n{hint}", tried)


def library_path() -> str:
    """Path (or loader name) of the libdiffuse this process uses."""
    return lib().path
