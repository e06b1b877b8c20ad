"""Exceptions: every failed C call becomes a DiffuseError carrying the
diffuse_status and the library's detailed message (diffuse_ctx_last_error()
or the model load's error buffer).

Each status maps to a subclass, so callers can catch what they care about::

    try:
        model = diffuse.Model(path)
    except diffuse.NotFoundError as e:
        print(e.status, e.message)

All of them are also ``DiffuseError``; several also derive from the
matching built-in (``InvalidArgumentError`` is a ``ValueError``,
``NotFoundError`` a ``FileNotFoundError``, ``OutOfMemoryError`` a
``MemoryError``, ``DiffuseTimeoutError`` a ``TimeoutError``).
"""

from __future__ import annotations

import errno as _errno
from typing import Dict, Optional, Type, Union

from .enums import Status


class DiffuseError(RuntimeError):
    """A libdiffuse call failed.

    Attributes:
        status: the diffuse_status as a ``Status`` (an IntEnum).
        message: the library's detailed message (which file, which tensor,
            expected vs found); the status' short text when it gave none.
    """

    status: Status
    message: str

    def __init__(self, status: Union[Status, int], message: Optional[str] = None):
        try:
            status = Status(status)
        except ValueError:
            pass  # a status newer than this binding: keep the int
        self.status = status  # type: ignore[assignment]
        self.message = message or _status_text(status)
        super().__init__(status, self.message)

    def __str__(self) -> str:
        name = self.status.name if isinstance(self.status, Status) else str(int(self.status))
        return f"{self.message} [{name}]"

    def __reduce__(self):  # picklable across processes
        return (type(self), (int(self.status), self.message))


class InvalidArgumentError(DiffuseError, ValueError):
    """DIFFUSE_ERR_INVALID_ARGUMENT."""


class OutOfMemoryError(DiffuseError, MemoryError):
    """DIFFUSE_ERR_OUT_OF_MEMORY."""


class DiffuseIOError(DiffuseError, OSError):
    """DIFFUSE_ERR_IO: a read or mmap failed."""

    def __init__(self, status: Union[Status, int], message: Optional[str] = None):
        DiffuseError.__init__(self, status, message)
        # OSError's fields, so code that inspects errno keeps working.
        self.errno = _errno.ENOENT if int(status) == Status.NOT_FOUND else _errno.EIO
        self.strerror = self.message

    def __str__(self) -> str:
        return DiffuseError.__str__(self)


class NotFoundError(DiffuseIOError, FileNotFoundError):
    """DIFFUSE_ERR_NOT_FOUND: a path or a required file is missing."""


class ModelError(DiffuseError):
    """The checkpoint is malformed, truncated, incomplete, misshapen,
    misconfigured or unsafe (the MODEL_* statuses)."""


class UnsupportedError(DiffuseError):
    """DIFFUSE_ERR_UNSUPPORTED: not supported by this build or version."""


class DeviceError(DiffuseError):
    """DIFFUSE_ERR_NO_DEVICE or DIFFUSE_ERR_DEVICE."""


class CancelledError(DiffuseError):
    """DIFFUSE_CANCELLED: the progress callback (or Context.cancel()) stopped the run."""


class BusyError(DiffuseError):
    """DIFFUSE_ERR_BUSY: the context is in use (e.g. called from its own callback)."""


class DiffuseTimeoutError(DiffuseError, TimeoutError):
    """DIFFUSE_ERR_TIMEOUT: a job did not finish within the time asked for
    (``Job.result(timeout=...)``; ``Job.wait`` returns False instead)."""


class ClosedError(DiffuseError, ValueError):
    """The Model or Context was closed. Status INVALID_ARGUMENT: the C call
    would have been given a freed handle, so the binding refuses it."""

    def __init__(self, what: str):
        super().__init__(Status.INVALID_ARGUMENT, f"{what} is closed")

    def __reduce__(self):
        return (DiffuseError, (int(self.status), self.message))


_BY_STATUS: Dict[int, Type[DiffuseError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.IO: DiffuseIOError,
    Status.NOT_FOUND: NotFoundError,
    Status.MODEL_FORMAT: ModelError,
    Status.MODEL_TRUNCATED: ModelError,
    Status.MODEL_MISSING_TENSOR: ModelError,
    Status.MODEL_SHAPE: ModelError,
    Status.MODEL_CONFIG: ModelError,
    Status.MODEL_UNSAFE: ModelError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.NO_DEVICE: DeviceError,
    Status.DEVICE: DeviceError,
    Status.CANCELLED: CancelledError,
    Status.BUSY: BusyError,
    Status.TIMEOUT: DiffuseTimeoutError,
}


def error_for(status: Union[Status, int], message: Optional[str] = None) -> DiffuseError:
    """The DiffuseError subclass instance for *status*."""
    return _BY_STATUS.get(int(status), DiffuseError)(status, message)


def _status_text(status: Union[Status, int]) -> str:
    """diffuse_status_string(), or a plain fallback when no library is loaded."""
    try:
        from ._lib import lib

        return lib().diffuse_status_string(int(status)).decode()
    except Exception:
        return f"status {int(status)}"
