"""The C enums of diffuse.h as Python IntEnums, and the parsers that turn
the strings users write ("cuda:1", "euler_a", "RGBA") into them.

Names drop the C prefix: DIFFUSE_ERR_NOT_FOUND is Status.NOT_FOUND,
DIFFUSE_SAMPLER_EULER_A is Sampler.EULER_A. Values are the C values.
"""

from __future__ import annotations

import enum
from typing import Tuple, Type, TypeVar, Union


class Status(enum.IntEnum):
    """diffuse_status: the result of every fallible C call."""

    OK = 0
    INVALID_ARGUMENT = 1
    OUT_OF_MEMORY = 2
    IO = 3
    NOT_FOUND = 4
    MODEL_FORMAT = 5
    MODEL_TRUNCATED = 6
    MODEL_MISSING_TENSOR = 7
    MODEL_SHAPE = 8
    MODEL_CONFIG = 9
    MODEL_UNSAFE = 10
    UNSUPPORTED = 11
    NO_DEVICE = 12
    DEVICE = 13
    CANCELLED = 14
    BUSY = 15
    INTERNAL = 16
    TIMEOUT = 17


class LogLevel(enum.IntEnum):
    """diffuse_log_level: severity of a log message."""

    ERROR = 0
    WARN = 1
    INFO = 2
    DEBUG = 3


class Stage(enum.IntEnum):
    """diffuse_stage: what a run is doing when it reports progress."""

    LOAD = 0
    TEXT = 1
    ENCODE = 2
    DENOISE = 3
    DECODE = 4


class JobState(enum.IntEnum):
    """diffuse_job_state: where an asynchronous job stands (since 0.2)."""

    QUEUED = 0  #: started; the worker has not begun the run
    RUNNING = 1  #: the run is in progress
    DONE = 2  #: finished with success; images await Job.result()
    FAILED = 3  #: finished with an error status
    CANCELLED = 4  #: finished cancelled


class WeightType(enum.IntEnum):
    """diffuse_weight_type: how weights are kept in host memory."""

    AUTO = 0
    F32 = 1
    F16 = 2
    BF16 = 3


class Family(enum.IntEnum):
    """diffuse_model_family."""

    UNKNOWN = 0
    SD1 = 1
    SD2 = 2


class Device(enum.IntEnum):
    """diffuse_device: where a context runs."""

    AUTO = 0
    CPU = 1
    CUDA = 2


class Operation(enum.IntEnum):
    """diffuse_operation: which call a memory estimate is for (since 0.3)."""

    GENERATE = 0
    EDIT = 1
    VARIATION = 2


class Precision(enum.IntEnum):
    """diffuse_precision: activations/weights type on the device."""

    AUTO = 0
    F32 = 1
    F16 = 2
    BF16 = 3


class PixelFormat(enum.IntEnum):
    """diffuse_pixel_format."""

    RGB8 = 0
    RGBA8 = 1
    BGRA8 = 2


class RowOrigin(enum.IntEnum):
    """diffuse_row_origin."""

    TOP_LEFT = 0
    BOTTOM_LEFT = 1


class ColorSpace(enum.IntEnum):
    """diffuse_color_space."""

    SRGB = 0
    LINEAR = 1


class Sampler(enum.IntEnum):
    """diffuse_sampler: sampling algorithms, each matching a diffusers scheduler."""

    DEFAULT = 0
    DDIM = 1
    DDPM = 2
    PNDM = 3
    LMS = 4
    EULER = 5
    EULER_A = 6
    HEUN = 7
    DPMPP_2M = 8
    DPMPP_2M_KARRAS = 9
    DPMPP_SDE = 10
    UNIPC = 11


E = Union[str, int, enum.IntEnum]


T = TypeVar("T", bound=enum.IntEnum)


def _parse(kind: Type[T], value: E, what: str) -> T:
    """*value* as a member of *kind*: a member, its int value, or its name
    in any case with '-', ' ' and '++' read as '_', '_' and 'PP'."""
    if isinstance(value, kind):
        return value
    if isinstance(value, enum.IntEnum):  # a member of another enum
        raise TypeError(f"{what} must be a {kind.__name__}, not {type(value).__name__}")
    if isinstance(value, str):
        key = value.strip().upper().replace("++", "PP").replace("-", "_").replace(" ", "_")
        try:
            return kind[key]
        except KeyError:
            pass
        names = ", ".join(m.name.lower() for m in kind)
        raise ValueError(f"unknown {what} {value!r}; one of: {names}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{what} {value} out of range") from None
    raise TypeError(f"{what} must be a str or {kind.__name__}, not {type(value).__name__}")


def parse_sampler(value: E) -> Sampler:
    """A Sampler from ``"euler_a"``, ``"DPM++ 2M Karras"``, ``Sampler.DDIM``, 6..."""
    return _parse(Sampler, value, "sampler")


def parse_device(value: E) -> Tuple[Device, int]:
    """(Device, index) from ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if isinstance(value, str) and ":" in value:
        name, _, index = value.partition(":")
        dev = _parse(Device, name, "device")
        if dev != Device.CUDA or not index.strip().isdigit():
            raise ValueError(f"device {value!r}: only 'cuda:N' takes an index")
        return Device.CUDA, int(index)
    return _parse(Device, value, "device"), 0


def parse_operation(value: E) -> Operation:
    """An Operation from ``"generate"``, ``"edit"``, ``"variation"`` or a member."""
    return _parse(Operation, value, "operation")


def parse_pixel_format(value: E) -> PixelFormat:
    """A PixelFormat from ``"RGB"``/``"RGBA"`` (output modes), ``"rgb8"``,
    ``"rgba8"``, ``"bgra8"`` or a member."""
    if isinstance(value, str) and value.strip().upper() in ("RGB", "RGBA", "BGRA"):
        value = value.strip() + "8"
    return _parse(PixelFormat, value, "pixel format")


def parse_precision(value: E) -> Precision:
    return _parse(Precision, value, "precision")


def parse_weight_type(value: E) -> WeightType:
    return _parse(WeightType, value, "weight type")


def parse_log_level(value: E) -> LogLevel:
    if isinstance(value, str) and value.strip().lower() == "warning":
        return LogLevel.WARN
    return _parse(LogLevel, value, "log level")
