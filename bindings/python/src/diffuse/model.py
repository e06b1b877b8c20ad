"""Model: a loaded checkpoint (diffuse_model).

A Model is immutable once loaded and may be shared by any number of
threads and contexts. Closing it is deferred while contexts created from
it are open: the native model is freed when the last of them closes, so a
context never runs on freed weights.
"""

from __future__ import annotations

import ctypes
import os
import threading
import operator
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from . import _lib
from .enums import (
    Family,
    LogLevel,
    WeightType,
    parse_device,
    parse_log_level,
    parse_operation,
    parse_pixel_format,
    parse_weight_type,
)
from .errors import ClosedError, InvalidArgumentError, Status, error_for

if TYPE_CHECKING:
    from .context import Context, Progress

#: A log callback: receives the level and the message. Exceptions raised in
#: it are re-raised by the call that logged, after that call returns.
LogCallback = Callable[[LogLevel, str], Any]

PathLike = Union[str, "os.PathLike[str]"]


def make_log_trampoline(owner: "weakref.ref[Any]") -> Any:
    """A C log callback that forwards to ``owner()._on_log``. It holds the
    owner weakly, so the owner never keeps itself alive through its callback."""

    def trampoline(level: int, message: Optional[bytes], user: Optional[int]) -> None:
        obj = owner()
        if obj is not None:
            obj._on_log(level, message)

    return _lib.log_fn(trampoline)


class _LogSink:
    """Holds a Python log callable, the first exception it raised, and the
    last ERROR message (the only account of a failure that leaves no handle
    to ask, such as diffuse_ctx_create's)."""

    def __init__(self, fn: Optional[LogCallback]):
        self.fn = fn
        self.pending: Optional[BaseException] = None
        self.last_error: Optional[str] = None

    def _on_log(self, level: int, message: Optional[bytes]) -> None:
        text = (message or b"").decode("utf-8", "replace")
        if level == LogLevel.ERROR:
            self.last_error = text
        if self.fn is None:
            return
        try:
            try:
                lv: Any = LogLevel(level)
            except ValueError:
                lv = level
            self.fn(lv, text)
        except BaseException as e:  # noqa: B902 - re-raised after the C call
            if self.pending is None:
                self.pending = e

    def take(self) -> Optional[BaseException]:
        e, self.pending = self.pending, None
        return e


class _LoadProgress:
    """The Python side of a load's progress callback: the callable, the
    first exception it raised (re-raised by the load) and the cancel flag
    (set by a true return value, an exception, or Ctrl-C; the names match
    Context's, so context._interrupt_cancels works on it)."""

    def __init__(self, fn: Optional[Callable[["Progress"], Any]]):
        self.fn = fn
        self._pending: Optional[BaseException] = None
        self._cancel = False
        self.asked_to_cancel = False  # the callable itself returned true

    def trampoline(self) -> Any:
        from .context import _progress_of

        def on_progress(p: Any, user: Optional[int]) -> int:
            try:
                if self._cancel:
                    return 1
                if self.fn is not None and self.fn(_progress_of(p.contents)):
                    self.asked_to_cancel = self._cancel = True
                return 1 if self._cancel else 0
            except BaseException as e:  # noqa: B902 - re-raised by the load
                if self._pending is None:
                    self._pending = e
                self._cancel = True
                return 1

        return _lib.progress_fn(on_progress)


@dataclass(frozen=True)
class MemoryEstimate:
    """What :meth:`Model.estimate_memory` reports (diffuse_memory_estimate),
    in bytes. ``host_bytes`` is the sum of the four ``*_bytes`` before it."""

    model_host_bytes: int  #: the loaded model (``Model.info["host_bytes"]``)
    context_host_bytes: int  #: the context's working memory (kept and reused by its next calls)
    run_host_bytes: int  #: temporary buffers of the call
    output_bytes: int  #: the returned images
    host_bytes: int  #: peak host memory of a process loading the model and making the call
    device_bytes: int  #: device memory (0 on the CPU)
    vae_tiled: bool  #: the VAE runs in tiles at these settings
    fits: bool  #: False: the call would fail with OutOfMemoryError under memory_budget


def encode_text(text: str, what: str) -> bytes:
    """*text* as UTF-8 for a C string; NUL would silently cut it short."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if "\0" in text:
        raise ValueError(f"{what} contains a NUL character")
    return text.encode("utf-8")


class Model:
    """A loaded Stable-Diffusion checkpoint.

    Args:
        path: a diffusers folder (``model_index.json`` with ``unet/``,
            ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) or a
            single-file ``.safetensors`` checkpoint. Pickle checkpoints
            (``.ckpt``) are refused.
        log: optional ``log(level, message)`` for messages of this model
            (the load and later uses of the model).
        log_level: most verbose level delivered ("error", "warn", "info",
            "debug"); default "warn".
        weight_type: host weight type ("auto" or "f32" in this version).
        progress: optional ``progress(Progress) -> bool | None`` called as
            the weight files are read (stage LOAD; ``step``/``total`` count
            the files and the final network setup), on the loading thread.
            A true return value cancels the load, which then raises
            :class:`CancelledError`; an exception raised in it cancels the
            load too and is re-raised by it. Nothing stays loaded either way.
            Ctrl-C during a load (on the main thread) cancels it the same way.

    Raises:
        NotFoundError: *path* or a file it needs is missing (the message names it).
        CancelledError: *progress* returned a true value.
        ModelError: the checkpoint is malformed, incomplete or unsafe.
        DiffuseError: any other failure, with ``.status`` and ``.message``.
        LibraryNotFoundError: libdiffuse itself could not be loaded.

    Use it as a context manager, or call :meth:`close`. Thread-safety: a
    Model may be used from any number of threads at once.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        log: Optional[LogCallback] = None,
        log_level: Union[str, int] = "warn",
        weight_type: Union[str, int] = "auto",
        progress: Optional[Callable[["Progress"], Any]] = None,
    ):
        self._handle: Optional[Any] = None  # set last: __del__ may run on a half-built object
        self._lock = threading.Lock()
        self._users = 0  # open contexts and running calls that need the native model
        self._closing = False
        L = _lib.lib()
        self._free = L.diffuse_model_free
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            self.path = os.fsdecode(self.path)
        path_bytes = os.fsencode(self.path)
        if b"\0" in path_bytes:
            raise ValueError("model path contains a NUL character")

        params = _lib.new_params(_lib.diffuse_model_params, L.diffuse_model_params_init)
        errbuf = ctypes.create_string_buffer(4096)
        params.error_buf = ctypes.cast(errbuf, ctypes.POINTER(ctypes.c_char))
        params.error_buf_size = len(errbuf)
        params.log_level = parse_log_level(log_level)
        params.weight_type = parse_weight_type(weight_type)
        # The library keeps the log callback for the model's whole life.
        self._log = _LogSink(log)
        self._log_cb = make_log_trampoline(weakref.ref(self._log)) if log is not None else None
        if self._log_cb is not None:
            params.log_fn = self._log_cb

        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable or None, not {type(progress).__name__}")
        # The progress callback is used only during the load (always
        # installed, so Ctrl-C can cancel a load).
        load_progress = _LoadProgress(progress)
        progress_cb = load_progress.trampoline()
        params.progress_fn = progress_cb

        from .context import _interrupt_cancels

        handle = _lib.model_p()
        with _interrupt_cancels(load_progress):
            status = L.diffuse_model_load(path_bytes, ctypes.byref(params), ctypes.byref(handle))
        log_pending = self._log.take()
        pending = load_progress._pending or log_pending
        if status != Status.OK:
            if handle:
                self._free(handle)
            if pending is not None:
                raise pending
            message = errbuf.value.decode("utf-8", "replace")
            if status == Status.CANCELLED and load_progress.asked_to_cancel and not message:
                message = f"loading {self.path} was cancelled by the progress callback"
            raise error_for(status, message or f"cannot load {self.path}")
        self._handle = handle
        if pending is not None:
            self.close()
            raise pending
        self._info = self._read_info(L)

    # -- lifetime -----------------------------------------------------------

    def _acquire(self) -> Any:
        """Counts a user of the native model (a context or a running call)
        and returns the handle; ClosedError once close() was called."""
        with self._lock:
            if self._closing or self._handle is None:
                raise ClosedError("Model")
            self._users += 1
            return self._handle

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._closing and self._users == 0:
                self._free_native()

    def _free_native(self) -> None:  # with self._lock held
        handle, self._handle = self._handle, None
        if handle is not None:
            self._free(handle)

    def close(self) -> None:
        """Releases the model. Idempotent. While contexts made from it are
        open, the native model lives on until the last one closes; the Model
        object refuses new use at once."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._closing:
                return
            self._closing = True
            if self._users == 0:
                self._free_native()

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closing or self._handle is None

    def __enter__(self) -> "Model":
        if self.closed:
            raise ClosedError("Model")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._info.get("family", "?")
        return f"<diffuse.Model {self.path!r} {state}>"

    # -- queries ------------------------------------------------------------

    def _read_info(self, L: Any) -> Dict[str, Any]:
        info = _lib.diffuse_model_info()
        info.struct_size = ctypes.sizeof(info)
        status = L.diffuse_model_get_info(self._handle, ctypes.byref(info))
        if status != Status.OK:
            raise error_for(status, "diffuse_model_get_info failed")
        try:
            family: Any = Family(info.family).name.lower()
        except ValueError:
            family = int(info.family)
        try:
            weight_dtype: Any = WeightType(info.weight_dtype).name.lower()
        except ValueError:
            weight_dtype = int(info.weight_dtype)
        native = info.sample_size * info.vae_scale_factor
        return {
            "path": self.path,
            "family": family,
            "unet_in_channels": info.unet_in_channels,
            "inpainting": info.unet_in_channels == 9,
            "latent_channels": info.latent_channels,
            "vae_scale_factor": info.vae_scale_factor,
            "sample_size": info.sample_size,
            "native_size": (native, native),
            "text_hidden_size": info.text_hidden_size,
            "text_layers": info.text_layers,
            "v_prediction": bool(info.v_prediction),
            "unet_parameters": info.unet_parameters,
            "vae_parameters": info.vae_parameters,
            "text_encoder_parameters": info.text_encoder_parameters,
            "weight_bytes": info.weight_bytes,
            "weight_dtype": weight_dtype,
            "host_bytes": info.host_bytes,
        }

    @property
    def info(self) -> Dict[str, Any]:
        """Facts about the model (diffuse_model_get_info) as a new dict:
        family ("sd1", "sd2", "unknown"), native_size (w, h) in pixels,
        unet_in_channels (9 = inpainting), v_prediction, parameter counts
        of each component, weight_bytes (on disk), weight_dtype ("f32",
        "f16" or "bf16": how most weight bytes are stored in the files),
        host_bytes (host memory the loaded model holds once every weight
        has been used), and the rest of the C struct."""
        if self.closed:
            raise ClosedError("Model")
        return dict(self._info)

    def estimate_memory(
        self,
        operation: Union[str, int] = "generate",
        width: int = 0,
        height: int = 0,
        n_images: int = 1,
        guidance_scale: float = 7.5,
        format: Union[str, int] = "RGB",
        memory_budget: int = 0,
        *,
        device: Union[str, int] = "auto",
    ) -> MemoryEstimate:
        """Memory a call with these settings needs (diffuse_estimate_memory),
        from the same plan the call makes; nothing runs.

        Args:
            operation: "generate", "edit" or "variation" (or an Operation).
            width, height: output (or input image) pixels; 0 = the model's
                native size.
            n_images: 1..16.
            guidance_scale: > 1 estimates a run with classifier-free guidance.
            format: pixel format of the returned images: "RGB", "RGBA",
                "BGRA" (or a PixelFormat).
            memory_budget: the context's memory_budget in bytes; 0 = none.
            device: "auto" (estimated as the CPU), "cpu" or "cuda" (since
                0.4: the arena and the weights' device copy in
                ``device_bytes``; no GPU is needed to estimate).

        Returns:
            A :class:`MemoryEstimate`. On the CPU its ``host_bytes`` is within
            10 % of the peak resident memory a process adds by loading the
            model and making the call.

        Raises:
            InvalidArgumentError: sizes not multiples of the VAE scale factor
                or too small, n_images out of range, an unknown enum.
            UnsupportedError: an operation the model cannot run (variation
                with an inpainting model).
            ClosedError: the model was closed.
        """
        L = _lib.lib()
        q = _lib.new_params(_lib.diffuse_memory_query, L.diffuse_memory_query_init)
        op = parse_operation(operation)
        q.operation = op
        for what, value in (("width", width), ("height", height), ("n_images", n_images)):
            if isinstance(value, bool):
                raise TypeError(f"{what} must be an int, not bool")
            v = operator.index(value)
            if not 0 <= v <= 0xFFFFFFFF:
                raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"{what} {v} out of range")
            setattr(q, what, v)
        q.guidance_scale = float(guidance_scale)
        q.format = parse_pixel_format(format)
        q.device = parse_device(device)[0]
        if isinstance(memory_budget, bool) or not 0 <= operator.index(memory_budget) < 1 << 64:
            raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"memory_budget {memory_budget!r} not in 0..2**64-1")
        q.memory_budget = operator.index(memory_budget)
        e = _lib.diffuse_memory_estimate()
        e.struct_size = ctypes.sizeof(e)
        handle = self._acquire()
        try:
            status = L.diffuse_estimate_memory(handle, ctypes.byref(q), ctypes.byref(e))
        finally:
            self._release()
        if status != Status.OK:
            raise error_for(
                status,
                f"diffuse_estimate_memory failed for {op.name.lower()} "
                f"{q.width or 'native'}x{q.height or 'native'}, {q.n_images} image(s), device {device!r}",
            )
        return MemoryEstimate(
            model_host_bytes=e.model_host_bytes,
            context_host_bytes=e.context_host_bytes,
            run_host_bytes=e.run_host_bytes,
            output_bytes=e.output_bytes,
            host_bytes=e.host_bytes,
            device_bytes=e.device_bytes,
            vae_tiled=bool(e.vae_tiled),
            fits=bool(e.fits),
        )

    def tokenize(self, text: str) -> List[int]:
        """The CLIP token ids of *text*, with start and end tokens, before
        padding and truncation (as transformers' CLIPTokenizer). Pipelines use
        the first 77; ``len(ids) - 2`` is the prompt length users see.

        Raises:
            ClosedError: the model was closed.
            InvalidArgumentError: text the tokenizer refuses.
        """
        data = encode_text(text, "text")
        L = _lib.lib()
        handle = self._acquire()
        try:
            capacity = 256
            while True:
                ids = (ctypes.c_int32 * capacity)()
                count = ctypes.c_size_t(0)
                status = L.diffuse_tokenize(handle, data, ids, capacity, ctypes.byref(count))
                if status != Status.OK:
                    raise error_for(status, f"diffuse_tokenize failed on {text[:40]!r}")
                if count.value <= capacity:
                    return list(ids[: count.value])
                capacity = count.value
        finally:
            self._release()

    def context(self, **kwargs: Any) -> "Context":
        """``Context(self, **kwargs)``: a new execution context on this model."""
        from .context import Context

        return Context(self, **kwargs)

