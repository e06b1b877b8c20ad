"""diffuse: Python binding for libdiffuse (Stable-Diffusion generate, edit
and variation in C, behind a stable C ABI), through ctypes.

    import diffuse

    with diffuse.Model("models/sd15") as model, diffuse.Context(model) as ctx:
        image, = ctx.generate("a lighthouse at dusk", steps=25, seed=42)
        image.save("lighthouse.png")

libdiffuse is found through DIFFUSE_LIBRARY, then the installed library,
then the build folder of the source tree (see ``diffuse._lib``); it is
loaded on first use. ``library_path()`` says which file was loaded.

Asynchronous jobs (``ctx.start_generate(...)`` -> :class:`Job` with
``poll()``, ``wait()``, ``cancel()``, ``result()``) keep a host's frame loop
free; ``ctx.set_preview(fn, every=k)`` shows the image as it forms.

Since 0.3: ``model.estimate_memory(...)`` says what a call would need,
``diffuse.list_devices()`` and ``ctx.device`` what runs where, ``out=``
writes images into caller arrays, and ``Model(path, progress=...)``
reports (and can cancel) loading. Since 0.4: ``ctx.memory`` says what a
context holds (and, on CUDA, the most device memory it has held).
"""

from __future__ import annotations

from ._images import have_pillow
from ._lib import EXPECTED_MAJOR, LibraryNotFoundError, LibraryVersionError, library_path
from .context import Context, PreviewCallback, Progress, ProgressCallback
from .devices import ContextDevice, ContextMemory, DeviceInfo, list_devices
from .enums import (
    ColorSpace,
    Device,
    Family,
    JobState,
    LogLevel,
    Operation,
    PixelFormat,
    Precision,
    RowOrigin,
    Sampler,
    Stage,
    Status,
    WeightType,
)
from .errors import (
    BusyError,
    CancelledError,
    ClosedError,
    DeviceError,
    DiffuseError,
    DiffuseIOError,
    DiffuseTimeoutError,
    InvalidArgumentError,
    ModelError,
    NotFoundError,
    OutOfMemoryError,
    UnsupportedError,
)
from .job import Job, JobStatus
from .model import LogCallback, MemoryEstimate, Model

__version__ = "0.4.0"

__all__ = [
    "BusyError",
    "CancelledError",
    "ClosedError",
    "ColorSpace",
    "Context",
    "ContextDevice",
    "ContextMemory",
    "Device",
    "DeviceInfo",
    "DeviceError",
    "DiffuseError",
    "DiffuseIOError",
    "DiffuseTimeoutError",
    "EXPECTED_MAJOR",
    "Family",
    "InvalidArgumentError",
    "Job",
    "JobState",
    "JobStatus",
    "LibraryNotFoundError",
    "LibraryVersionError",
    "LogCallback",
    "LogLevel",
    "MemoryEstimate",
    "Model",
    "ModelError",
    "NotFoundError",
    "Operation",
    "OutOfMemoryError",
    "PixelFormat",
    "PreviewCallback",
    "Precision",
    "Progress",
    "ProgressCallback",
    "RowOrigin",
    "Sampler",
    "Stage",
    "Status",
    "UnsupportedError",
    "WeightType",
    "have_pillow",
    "library_path",
    "list_devices",
    "status_string",
    "version",
    "version_info",
]


def version() -> str:
    """Version of the libdiffuse loaded ("MAJOR.MINOR.PATCH"); loads it."""
    from ._lib import lib

    return lib().diffuse_version_string().decode()


def version_info() -> tuple:
    """(major, minor, patch) of the libdiffuse loaded; loads it."""
    from ._lib import lib

    return lib().version()


def status_string(status: int) -> str:
    """diffuse_status_string(): the library's short text for a status."""
    from ._lib import lib

    return lib().diffuse_status_string(int(status)).decode()
