"""Context: one execution state (diffuse_ctx) and the three image calls.

A Context runs one call at a time; a second thread calling the same context
waits for the first. Different contexts, on the same model or not, run in
parallel: ctypes releases the GIL for the whole C call, so two threads on
two contexts generate at the same time.

The progress callback is a Python callable given a :class:`Progress` (a
named tuple that starts ``(stage, step, total, ...)``). Returning a true
value cancels the run: the call raises :class:`CancelledError` and the
context stays usable. An exception raised inside the callback also cancels
the run, and is re-raised from the call once the library has returned (so
Ctrl-C during a generate cancels it cleanly).

``start_generate`` / ``start_edit`` / ``start_variation`` run the same calls
as asynchronous jobs (:class:`~diffuse.job.Job`): they return at once, and
the progress and preview callbacks then run on the job's worker thread. An
exception raised in a callback during a job cancels the job and is re-raised
by ``Job.result()``.

``set_preview`` installs a preview callback: every k denoising steps it
receives a small RGB image of the current sample (a cheap linear projection
of the latents, at latent size) and the :class:`Progress` of that step;
``set_preview_decode(k)`` makes every k-th of them a full VAE decode.

``out=`` on generate / edit / variation (and their ``start_*``) hands the
library caller-owned numpy arrays to write the images into, instead of
copying them out of library memory; the call then returns those arrays.
"""

from __future__ import annotations

import contextlib
import ctypes
import operator
import secrets
import signal
import threading
import weakref
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import _images, _lib
from ._images import ImageInput, ImageOutput, OutArrays
from .devices import ContextDevice, ContextMemory, device_info_of, new_device_info_array
from .enums import Device, Stage, Status, parse_device, parse_log_level, parse_precision, parse_sampler
from .errors import BusyError, ClosedError, InvalidArgumentError, error_for
from .job import Job
from .model import LogCallback, Model, _LogSink, encode_text, make_log_trampoline


class Progress(NamedTuple):
    """One progress report (diffuse_progress).

    ``stage, step, total = progress[:3]`` works as for a plain tuple.
    """

    stage: Stage  #: what is running (TEXT, ENCODE, DENOISE, DECODE)
    step: int  #: steps done in this stage, 0..total
    total: int  #: steps in this stage
    image_index: int  #: image of the batch being worked on
    image_count: int  #: images requested in this call
    elapsed: float  #: seconds since the call started


#: ``progress(p) -> bool | None``: a true return value cancels the run.
ProgressCallback = Callable[[Progress], Any]

#: ``preview(image, progress)``: a small RGB preview image (PIL image, or a
#: numpy uint8 array (h, w, 3)) and the Progress of its denoising step. Its
#: return value is ignored; an exception raised in it cancels the run.
PreviewCallback = Callable[[ImageOutput, Progress], Any]


def _progress_of(c: Any) -> Progress:
    """A Progress from a diffuse_progress struct."""
    try:
        stage: Any = Stage(c.stage)
    except ValueError:
        stage = int(c.stage)
    return Progress(stage, c.step, c.total, c.image_index, c.image_count, c.elapsed_seconds)

Size = Union[None, int, Tuple[int, int], Sequence[int]]


def _u32(value: Any, what: str) -> int:
    """*value* (an int or numpy integer) as a C uint32, refusing what would
    silently wrap in the conversion."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"{what} {value} out of range")
    return value


def _seed(seed: Optional[int]) -> int:
    """A C uint64 seed; None picks a random one."""
    if seed is None:
        return secrets.randbits(63)
    seed = operator.index(seed)  # ints and numpy integers
    if not 0 <= seed < 1 << 64:
        raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"seed {seed} not in 0..2**64-1")
    return seed


def _size(size: Size) -> Tuple[int, int]:
    """(width, height) from None (native), an int (square) or (w, h)."""
    if size is None:
        return 0, 0
    if isinstance(size, int) and not isinstance(size, bool):
        return _u32(size, "size"), _u32(size, "size")
    try:
        w, h = size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(f"size must be None, an int or (width, height), not {size!r}") from None
    return _u32(w, "width"), _u32(h, "height")


def _opt_text(text: Optional[str], what: str) -> Optional[bytes]:
    return None if text is None else encode_text(text, what)


def _progress_trampoline(owner: "weakref.ref[Context]") -> Any:
    """The C progress callback of a context. It holds the context weakly:
    the context keeps the callback alive, not the other way round."""

    def trampoline(p: Any, user: Optional[int]) -> int:
        try:
            ctx = owner()
            return 1 if ctx is None else ctx._on_progress(p)
        except BaseException as e:  # e.g. KeyboardInterrupt delivered right here
            ctx = owner()
            if ctx is not None:
                ctx._callback_failed(e)
            return 1

    return _lib.progress_fn(trampoline)


def _preview_trampoline(owner: "weakref.ref[Context]") -> Any:
    """The C preview callback of a context (held weakly, as the progress one)."""

    def trampoline(image: Any, p: Any, user: Optional[int]) -> None:
        try:
            ctx = owner()
            if ctx is not None:
                ctx._on_preview(image, p)
        except BaseException as e:  # never let an exception reach ctypes (it would print and drop it)
            ctx = owner()
            if ctx is not None:
                ctx._callback_failed(e)

    return _lib.preview_fn(trampoline)


@contextlib.contextmanager
def _interrupt_cancels(ctx: "Context") -> Iterator[None]:
    """Makes Ctrl-C during a C call cancel it and raise KeyboardInterrupt.

    Python runs signal handlers at the next bytecode, which during a C call
    is inside the progress callback, possibly before any of the binding's
    own code could catch the KeyboardInterrupt (ctypes would print and drop
    it). So while the call runs, SIGINT only records itself and cancels; the
    interrupt is raised once the library has returned. Done only on the main
    thread and only when SIGINT has Python's default handler.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        # no locks here: this runs on the thread that may hold them
        if ctx._pending is None:
            ctx._pending = KeyboardInterrupt()
        ctx._cancel = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Context:
    """An execution context on a :class:`Model`: device, threads, workspace,
    callbacks. Make several to run several images at once.

    Args:
        model: the model to run; it is kept open while this context is.
        device: "auto" (CUDA when available, else the CPU), "cpu", "cuda"
            or "cuda:N".
        threads: CPU threads; 0 = all cores.
        progress: optional ``progress(Progress) -> bool | None``; a true
            return value cancels the run. Called on the thread that runs the
            call. May be replaced later through the ``progress`` attribute.
        precision: "auto", "f32", "f16" or "bf16".
        memory_budget: working memory (activations and scratch, not the
            weights) the context may use, in bytes; 0 = no limit.
        log: optional ``log(level, message)`` for this context's messages.
        log_level: most verbose level delivered; default "warn".

    Raises:
        ClosedError: *model* was closed.
        DeviceError: "cuda" asked for where no usable GPU or CUDA module is.
        DiffuseError: any other failure (``.status``, ``.message``).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        model: Model,
        device: Union[str, int] = "auto",
        threads: int = 0,
        progress: Optional[ProgressCallback] = None,
        *,
        precision: Union[str, int] = "auto",
        memory_budget: int = 0,
        log: Optional[LogCallback] = None,
        log_level: Union[str, int] = "warn",
    ):
        self._handle: Optional[Any] = None  # set last: __del__ may see a half-built object
        if not isinstance(model, Model):
            raise TypeError(f"model must be a diffuse.Model, not {type(model).__name__}")
        self.model = model
        self.progress = progress
        self._lock = threading.Lock()  # one call at a time
        self._state = threading.Lock()  # guards _running / _cancel
        self._owner: Optional[int] = None  # thread running a call
        self._running = False
        self._cancel = False
        self._pending: Optional[BaseException] = None
        # The job started last (weakly: a Job holds its Context, not the
        # reverse), for routing callback exceptions and cancel() to it.
        self._job_ref: Optional["weakref.ref[Job]"] = None
        self._tls = threading.local()  # .active: this thread is in one of our callbacks
        self._preview: Optional[PreviewCallback] = None
        self._preview_cb: Optional[Any] = None  # the C callback, referenced while installed
        self._preview_numpy: Optional[bool] = None
        L = _lib.lib()
        self._L = L  # kept so __del__ works during interpreter shutdown

        params = _lib.new_params(_lib.diffuse_ctx_params, L.diffuse_ctx_params_init)
        params.device, params.device_index = parse_device(device)
        params.n_threads = _u32(threads, "threads")
        params.precision = parse_precision(precision)
        if isinstance(memory_budget, bool) or not 0 <= operator.index(memory_budget) < 1 << 64:
            raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"memory_budget {memory_budget!r} not in 0..2**64-1")
        params.memory_budget = operator.index(memory_budget)
        params.log_level = parse_log_level(log_level)
        # Both C callbacks stay referenced by the context for its whole life:
        # the library calls them on every run. The log callback is installed
        # even without a Python one, to catch diffuse_ctx_create's message.
        self._log = _LogSink(log)
        self._log_cb = make_log_trampoline(weakref.ref(self._log))
        params.log_fn = self._log_cb
        self._progress_cb = _progress_trampoline(weakref.ref(self))
        params.progress_fn = self._progress_cb

        model_handle = model._acquire()
        handle = _lib.ctx_p()
        try:
            status = L.diffuse_ctx_create(model_handle, ctypes.byref(params), ctypes.byref(handle))
            pending = self._log.take()
            if status != Status.OK:
                if pending is not None:
                    raise pending
                raise error_for(status, self._log.last_error or f"diffuse_ctx_create failed (device {device!r})")
            self._device = self._read_device(handle)
        except BaseException:
            if handle:
                L.diffuse_ctx_free(handle)
            model._release()
            raise
        self._handle = handle
        if pending is not None:
            self.close()
            raise pending

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Frees the context and its memory. Idempotent. If another thread is
        running a call on it, that call is cancelled and close() waits for
        it. Raises BusyError when called from this context's own callback."""
        if getattr(self, "_handle", None) is None:
            return
        if self._owner == threading.get_ident() or self._in_callback():
            raise BusyError(Status.BUSY, "a Context cannot be closed from its own callback; return True to cancel")
        self.cancel()
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            self._L.diffuse_ctx_free(handle)
            self.model._release()

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._handle is None

    def __enter__(self) -> "Context":
        if self.closed:
            raise ClosedError("Context")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<diffuse.Context on {self.model.path!r}{' closed' if self.closed else ''}>"

    def cancel(self) -> None:
        """Asks the call running on this context (from another thread) to
        stop: it raises CancelledError within a step. Also cancels the
        context's running job (its result() then raises CancelledError).
        No effect when idle."""
        with self._state:
            if self._running:
                self._cancel = True
            job = self._job_ref() if self._job_ref is not None else None
        if job is not None:
            try:
                job.cancel()
            except ClosedError:
                pass

    # -- callbacks ----------------------------------------------------------

    def _in_callback(self) -> bool:
        """True on a thread that is inside this context's progress or
        preview callback (for a job: its worker thread)."""
        return getattr(self._tls, "active", False)

    def _callback_failed(self, e: BaseException) -> None:
        """Keeps the first exception a callback raised, for the job that is
        running (re-raised by Job.result()) or else for the blocking call,
        and makes the next progress report cancel the run."""
        with self._state:
            job = self._job_ref() if self._job_ref is not None else None
            if job is not None:
                if job._pending is None:
                    job._pending = e
            elif self._pending is None:
                self._pending = e
            self._cancel = True

    def _on_progress(self, p: Any) -> int:
        self._tls.active = True
        try:
            if self._cancel:
                return 1
            fn = self.progress
            if fn is None:
                return 0
            return 1 if fn(_progress_of(p.contents)) else 0
        except BaseException as e:  # noqa: B902 - re-raised by the call
            self._callback_failed(e)
            return 1
        finally:
            self._tls.active = False

    def _on_preview(self, image: Any, p: Any) -> None:
        self._tls.active = True
        try:
            fn = self._preview
            if fn is None or self._cancel:
                return
            img = _images.from_c_image(image.contents, None, _images.pil_for_output(self._preview_numpy))
            fn(img, _progress_of(p.contents))
        finally:
            self._tls.active = False

    def set_preview(
        self, preview: Optional[PreviewCallback], every: int = 1, *, return_numpy: Optional[bool] = None
    ) -> None:
        """Installs (or with None removes) a preview callback for this
        context's calls and jobs (diffuse_ctx_set_preview).

        Every *every* denoising steps (steps k, 2k, ... and the last of each
        image) ``preview(image, progress)`` receives a small RGB image of the
        current sample at latent size (the output size / the VAE scale
        factor, e.g. 64x64 for 512x512 SD) and the :class:`Progress` of that
        step. The image is a cheap linear projection of the latents, not a
        VAE decode; early in denoising it is mostly noise. The first call
        fits the projection for the model (one small VAE decode).

        The callback runs on the thread that runs the call: the calling
        thread for generate/edit/variation, the job's worker thread for a
        job. Its return value is ignored. If it raises, the run is cancelled
        at that step and the exception is re-raised by the blocking call,
        or by ``Job.result()`` for a job; the process is never taken down
        and the context stays usable. It must not use this context.

        Args:
            preview: the callable, or None to turn previews off.
            every: deliver a preview every this many steps (>= 1).
            return_numpy: True for numpy arrays, False for PIL images; None
                (default) = PIL when Pillow is installed.

        Raises:
            BusyError: a job or call is running on the context.
            InvalidArgumentError: *every* is 0.
            UnsupportedError: the model cannot give previews.
            ClosedError: the context was closed.
        """
        every = _u32(every, "every")
        if preview is not None and not callable(preview):
            raise TypeError(f"preview must be callable or None, not {type(preview).__name__}")
        if preview is not None and every == 0:
            raise InvalidArgumentError(Status.INVALID_ARGUMENT, "every must be >= 1")
        if self._owner == threading.get_ident() or self._in_callback():
            raise BusyError(Status.BUSY, "set_preview() cannot be called from the context's own callback")
        with self._lock:
            handle = self._handle
            if handle is None:
                raise ClosedError("Context")
            cb = _preview_trampoline(weakref.ref(self)) if preview is not None else None
            fn_ptr = ctypes.cast(cb, ctypes.c_void_p) if cb is not None else None
            status = self._L.diffuse_ctx_set_preview(handle, fn_ptr, None, every if preview is not None else 0)
            if status != Status.OK:
                if status == Status.BUSY:
                    raise BusyError(Status.BUSY, "a job or call is running on this context")
                raise error_for(status, self._L.diffuse_ctx_last_error(handle).decode("utf-8", "replace"))
            # Only now is the previous C callback out of the library's hands.
            self._preview, self._preview_cb, self._preview_numpy = preview, cb, return_numpy

    @property
    def preview(self) -> Optional[PreviewCallback]:
        """The preview callback set with :meth:`set_preview`, or None."""
        return self._preview

    def set_preview_decode(self, every: int) -> None:
        """Makes every *every*-th denoising step's preview (steps k, 2k, ...
        and the last) a full VAE decode of the current sample's denoised
        estimate instead of the cheap projection
        (diffuse_ctx_set_preview_decode): an image of the output size that
        shows what the picture would be if denoising stopped there. Other
        preview steps keep the projection. Each costs about as much as the
        final decode, on the thread running the call. The callback and its
        interval come from :meth:`set_preview`; without one this has no
        effect until one is set.

        Args:
            every: 0 (the default of a new context) = never decode; else >= 1.

        Raises:
            BusyError: a job or call is running on the context.
            ClosedError: the context was closed.
        """
        every = _u32(every, "every")
        if self._owner == threading.get_ident() or self._in_callback():
            raise BusyError(Status.BUSY, "set_preview_decode() cannot be called from the context's own callback")
        with self._lock:
            handle = self._handle
            if handle is None:
                raise ClosedError("Context")
            status = self._L.diffuse_ctx_set_preview_decode(handle, every)
            if status != Status.OK:
                if status == Status.BUSY:
                    raise BusyError(Status.BUSY, "a job or call is running on this context")
                raise error_for(status, self._L.diffuse_ctx_last_error(handle).decode("utf-8", "replace"))

    @property
    def device(self) -> ContextDevice:
        """What this context asked for and what it runs on
        (diffuse_ctx_get_device): ``requested`` (a :class:`Device`: AUTO,
        CPU or CUDA) and ``info`` (a :class:`DeviceInfo`; with "auto" on a
        host without a usable GPU, the CPU).

        Raises:
            ClosedError: the context was closed.
        """
        if self._handle is None:
            raise ClosedError("Context")
        return self._device

    @property
    def memory(self) -> ContextMemory:
        """The memory this context holds and has held
        (diffuse_ctx_get_memory, since 0.4): ``device``, ``memory_budget``,
        ``host_bytes`` (its host working memory; 0 on CUDA),
        ``device_bytes`` (CUDA: its arena and its device copy of the
        weights) and ``device_peak_bytes`` (the most held at once; within
        the budget when one is set).

        Raises:
            ClosedError: the context was closed.
            BusyError: a call or job is running on it (ask between calls).
        """
        if self._owner == threading.get_ident() or self._in_callback():
            raise BusyError(Status.BUSY, "memory cannot be read from the context's own callback")
        with self._lock:
            handle = self._handle
            if handle is None:
                raise ClosedError("Context")
            m = _lib.diffuse_ctx_memory()
            m.struct_size = ctypes.sizeof(m)
            status = self._L.diffuse_ctx_get_memory(handle, ctypes.byref(m))
            if status == Status.BUSY:
                raise BusyError(Status.BUSY, "a job or call is running on this context")
            if status != Status.OK:
                raise error_for(status, "diffuse_ctx_get_memory failed")
        try:
            device: Any = Device(m.device)
        except ValueError:
            device = int(m.device)
        return ContextMemory(device, int(m.memory_budget), int(m.host_bytes), int(m.device_bytes),
                             int(m.device_peak_bytes))

    def _read_device(self, handle: Any) -> ContextDevice:
        """diffuse_ctx_get_device, asked once at creation (a context's
        device does not change, and the answer then needs no handle later,
        when another thread might be closing the context)."""
        requested = _lib.c_enum(0)
        info = new_device_info_array(1)
        status = self._L.diffuse_ctx_get_device(handle, ctypes.byref(requested), info)
        if status != Status.OK:
            raise error_for(status, "diffuse_ctx_get_device failed")
        try:
            req: Any = Device(requested.value)
        except ValueError:
            req = requested.value
        return ContextDevice(req, device_info_of(info[0]))

    # -- running calls ------------------------------------------------------

    def _run(
        self, fn: Any, params: Any, return_numpy: Optional[bool], outputs: Optional[List[Any]] = None
    ) -> List[ImageOutput]:
        """Runs a C image call under the context's lock; turns its status,
        message and any callback exception into a result or a raise. With
        *outputs* (the ``out=`` arrays the params point to) those arrays are
        the result."""
        me = threading.get_ident()
        if self._owner == me:
            raise BusyError(Status.BUSY, "a Context cannot be used from its own callback")
        with self._lock:
            handle = self._handle
            if handle is None:
                raise ClosedError("Context")
            job = self._job_ref() if self._job_ref is not None else None
            if job is not None and not job.finished:
                raise BusyError(Status.BUSY, "a job is running on this context")
            self._owner = me
            with self._state:
                self._running, self._cancel = True, False
                self._job_ref = None
            self._pending = None
            out = ctypes.POINTER(_lib.diffuse_images)()
            try:
                with _interrupt_cancels(self):
                    status = fn(handle, ctypes.byref(params), ctypes.byref(out))
                message = self._L.diffuse_ctx_last_error(handle).decode("utf-8", "replace")
            finally:
                with self._state:
                    self._running, self._cancel = False, False
                self._owner = None
            pending, self._pending = self._pending, None
            log_pending = self._log.take()  # always taken, so it never leaks into the next call
            pending = pending or log_pending
            try:
                if pending is not None:
                    raise pending
                if status != Status.OK:
                    raise error_for(status, message)
                if outputs is not None:
                    return list(outputs)
                return _images.from_c_images(out.contents, return_numpy)
            finally:
                self._L.diffuse_images_free(out)

    def _outputs(self, out: Optional[OutArrays], n: Optional[int]) -> Tuple[int, Optional[List[Any]], Any]:
        """(n_images, the out= arrays or None, their C diffuse_image array
        or None). Without *out*, n defaults to 1; with it, to len(out)."""
        if out is None:
            return (1 if n is None else _u32(n, "n")), None, None
        arrays = _images.out_arrays(out)
        if n is not None and _u32(n, "n") != len(arrays):
            raise InvalidArgumentError(Status.INVALID_ARGUMENT, f"n is {n} but out holds {len(arrays)} array(s)")
        return len(arrays), arrays, _images.c_out_images(arrays)

    def generate(
        self,
        prompt: str,
        negative_prompt: Optional[str] = None,
        n: Optional[int] = None,
        size: Size = None,
        steps: int = 30,
        guidance: float = 7.5,
        guidance_rescale: float = 0.0,
        sampler: Union[str, int] = "default",
        seed: Optional[int] = 0,
        clip_skip: int = 0,
        *,
        mode: str = "RGB",
        return_numpy: Optional[bool] = None,
        out: Optional[OutArrays] = None,
    ) -> List[ImageOutput]:
        """Text to image (DALL·E images/generations).

        Args:
            prompt: what to draw (UTF-8; the first 75 tokens count).
            negative_prompt: what to steer away from; None = unconditional.
            n: number of images, 1..16 (default 1, or len(out)); image i
                uses seed + i.
            size: None for the model's native size (or the size of the
                ``out`` arrays), an int for a square, or (width, height);
                multiples of 8.
            steps: denoising steps, 1..1000.
            guidance: classifier-free guidance scale; <= 1 disables it.
            guidance_rescale: 0..1 (diffusers' guidance_rescale).
            sampler: "default" (the model's scheduler), "ddim", "ddpm",
                "pndm", "lms", "euler", "euler_a", "heun", "dpmpp_2m",
                "dpmpp_2m_karras", "dpmpp_sde", "unipc", or a Sampler.
            seed: 0..2**64-1, reproducible with diffusers'
                torch.Generator("cpu").manual_seed(seed); None = random.
            clip_skip: diffusers' clip_skip; 0 = last layer.
            mode: "RGB" or "RGBA" (alpha 255).
            return_numpy: True for numpy arrays (H, W, C), False for PIL
                images; None (default) = PIL when Pillow is installed.
            out: caller-owned output arrays the library writes the images
                into (no copy): one uint8 array (H, W, 3|4), an array
                (N, H, W, 3|4), or a sequence of n arrays (H, W, 3|4), each
                C-contiguous or a row-strided view (e.g. a slice of a larger
                array; bytes between rows are not written). 3 channels give
                RGB, 4 RGBA (alpha 255); ``mode`` and ``return_numpy`` are
                then ignored. They must be exactly the output size.

        Returns:
            A list of n images (PIL images carry ``info["seed"]``); with
            ``out``, the out arrays themselves.

        Raises:
            InvalidArgumentError: bad sizes, counts or values.
            CancelledError: the progress callback returned true (or cancel()).
            ClosedError: the context was closed.
            DiffuseError: any other failure; the exception raised by the
                progress callback, if it raised one.
        """
        p, outputs, keep = self._generate_params(
            prompt, negative_prompt, n, size, steps, guidance, guidance_rescale, sampler, seed, clip_skip, mode, out
        )
        return self._run(self._L.diffuse_generate, p, return_numpy, outputs)

    def _generate_params(
        self,
        prompt: str,
        negative_prompt: Optional[str],
        n: Optional[int],
        size: Size,
        steps: int,
        guidance: float,
        guidance_rescale: float,
        sampler: Union[str, int],
        seed: Optional[int],
        clip_skip: int,
        mode: str,
        out: Optional[OutArrays],
    ) -> Tuple[Any, Optional[List[Any]], List[Any]]:
        """diffuse_generate_params for generate / start_generate, the out=
        arrays (or None) and what the struct points to (keep it alive while
        the struct is used). The bytes objects its strings point to are kept
        alive by the struct itself (ctypes' c_char_p fields keep a reference)."""
        L = self._L
        p = _lib.new_params(_lib.diffuse_generate_params, L.diffuse_generate_params_init)
        p.prompt = encode_text(prompt, "prompt")
        p.negative_prompt = _opt_text(negative_prompt, "negative_prompt")
        p.n_images, outputs, c_out = self._outputs(out, n)
        if size is None and outputs is not None:
            size = (outputs[0].shape[1], outputs[0].shape[0])
        p.width, p.height = _size(size)
        p.steps = _u32(steps, "steps")
        p.guidance_scale = float(guidance)
        p.guidance_rescale = float(guidance_rescale)
        p.sampler = parse_sampler(sampler)
        p.seed = _seed(seed)
        p.clip_skip = _u32(clip_skip, "clip_skip")
        p.output.format = _images.output_format(mode)[0]
        keep: List[Any] = []
        if c_out is not None:
            p.output_images = ctypes.cast(c_out, ctypes.POINTER(_lib.diffuse_image))
            keep += [outputs, c_out]
        return p, outputs, keep

    def edit(
        self,
        image: ImageInput,
        prompt: str,
        mask: Optional[ImageInput] = None,
        negative_prompt: Optional[str] = None,
        n: Optional[int] = None,
        steps: int = 30,
        guidance: float = 7.5,
        strength: float = 1.0,
        sampler: Union[str, int] = "default",
        seed: Optional[int] = 0,
        mask_feather: float = 0.0,
        *,
        mode: str = "RGB",
        return_numpy: Optional[bool] = None,
        out: Optional[OutArrays] = None,
    ) -> List[ImageOutput]:
        """Repaints the masked part of *image* (DALL·E images/edits); pixels
        the mask keeps come back unchanged.

        Args:
            image: a PIL image, a uint8 array (H, W, 3|4) or a path.
            prompt: what to paint in the masked part.
            mask: None: *image*'s alpha marks the edit (alpha 0 = edit; the
                image needs an alpha channel). Otherwise an image of the same
                size read as grayscale: white = edit.
            strength: 0..1, how far the masked part is re-noised.
            mask_feather: pixels of soft edge when pasting back.
            out: as :meth:`generate`; the arrays must be *image*'s size.
            Others: as :meth:`generate`.

        Returns / Raises: as :meth:`generate`.
        """
        p, outputs, keep = self._edit_params(
            image, prompt, mask, negative_prompt, n, steps, guidance, strength, sampler, seed, mask_feather, mode, out
        )
        # the pixels stay referenced by `keep` until the call returns
        return self._run(self._L.diffuse_edit, p, return_numpy, outputs)

    def _edit_params(
        self,
        image: ImageInput,
        prompt: str,
        mask: Optional[ImageInput],
        negative_prompt: Optional[str],
        n: Optional[int],
        steps: int,
        guidance: float,
        strength: float,
        sampler: Union[str, int],
        seed: Optional[int],
        mask_feather: float,
        mode: str,
        out: Optional[OutArrays],
    ) -> Tuple[Any, Optional[List[Any]], List[Any]]:
        """diffuse_edit_params for edit / start_edit, the out= arrays (or
        None), and the arrays and C image structs it points to (keep them
        alive while it is used)."""
        L = self._L
        keep: List[Any] = []
        p = _lib.new_params(_lib.diffuse_edit_params, L.diffuse_edit_params_init)
        arr = _images.to_array(image, "image")
        c_img = _images.c_image(arr)
        keep += [arr, c_img]
        p.image = ctypes.pointer(c_img)
        if mask is not None:
            marr = _images.to_array(mask, "mask", mask=True)
            c_mask = _images.c_image(marr)
            keep += [marr, c_mask]
            p.mask = ctypes.pointer(c_mask)
        p.prompt = encode_text(prompt, "prompt")
        p.negative_prompt = _opt_text(negative_prompt, "negative_prompt")
        p.n_images, outputs, c_out = self._outputs(out, n)
        p.steps = _u32(steps, "steps")
        p.guidance_scale = float(guidance)
        p.strength = float(strength)
        p.sampler = parse_sampler(sampler)
        p.seed = _seed(seed)
        p.mask_feather = float(mask_feather)
        p.output.format = _images.output_format(mode)[0]
        if c_out is not None:
            p.output_images = ctypes.cast(c_out, ctypes.POINTER(_lib.diffuse_image))
            keep += [outputs, c_out]
        return p, outputs, keep

    def variation(
        self,
        image: ImageInput,
        n: Optional[int] = None,
        strength: float = 0.7,
        prompt: Optional[str] = None,
        negative_prompt: Optional[str] = None,
        steps: int = 30,
        guidance: float = 7.5,
        sampler: Union[str, int] = "default",
        seed: Optional[int] = 0,
        *,
        mode: str = "RGB",
        return_numpy: Optional[bool] = None,
        out: Optional[OutArrays] = None,
    ) -> List[ImageOutput]:
        """Variations of *image* (DALL·E images/variations): the image is
        encoded, noised to *strength* and denoised from n seeds.

        Args:
            image: a PIL image, a uint8 array (H, W, 3|4) or a path.
            n: number of variations, 1..16; variation i uses seed + i.
            strength: 0..1; higher strays further from the image.
            prompt: optional text to steer with (guidance applies only then).
            out: as :meth:`generate`; the arrays must be *image*'s size.
            Others: as :meth:`generate`.

        Returns / Raises: as :meth:`generate`.
        """
        p, outputs, keep = self._variation_params(
            image, n, strength, prompt, negative_prompt, steps, guidance, sampler, seed, mode, out
        )
        return self._run(self._L.diffuse_variation, p, return_numpy, outputs)

    def _variation_params(
        self,
        image: ImageInput,
        n: Optional[int],
        strength: float,
        prompt: Optional[str],
        negative_prompt: Optional[str],
        steps: int,
        guidance: float,
        sampler: Union[str, int],
        seed: Optional[int],
        mode: str,
        out: Optional[OutArrays],
    ) -> Tuple[Any, Optional[List[Any]], List[Any]]:
        """diffuse_variation_params for variation / start_variation, the
        out= arrays (or None), and what it points to (keep it alive while
        the struct is used)."""
        L = self._L
        p = _lib.new_params(_lib.diffuse_variation_params, L.diffuse_variation_params_init)
        arr = _images.to_array(image, "image")
        c_img = _images.c_image(arr)
        p.image = ctypes.pointer(c_img)
        p.prompt = _opt_text(prompt, "prompt")
        p.negative_prompt = _opt_text(negative_prompt, "negative_prompt")
        p.n_images, outputs, c_out = self._outputs(out, n)
        p.steps = _u32(steps, "steps")
        p.guidance_scale = float(guidance)
        p.strength = float(strength)
        p.sampler = parse_sampler(sampler)
        p.seed = _seed(seed)
        p.output.format = _images.output_format(mode)[0]
        keep: List[Any] = [arr, c_img]
        if c_out is not None:
            p.output_images = ctypes.cast(c_out, ctypes.POINTER(_lib.diffuse_image))
            keep += [outputs, c_out]
        return p, outputs, keep

    # -- asynchronous jobs ------------------------------------------------------

    def _start(
        self,
        fn: Any,
        params: Any,
        return_numpy: Optional[bool],
        what: str,
        outputs: Optional[List[Any]] = None,
        keep: Optional[List[Any]] = None,
    ) -> Job:
        """Starts a C job under the context's lock (without waiting for it:
        a context in use raises BusyError, as the library does). *outputs*
        (the out= arrays) become the job's result; the job keeps them and
        *keep* (the C structs pointing to them) alive until it has finished."""
        if self._owner == threading.get_ident() or self._in_callback():
            raise BusyError(Status.BUSY, "a job cannot be started from the context's own callback")
        if not self._lock.acquire(blocking=False):
            if self._handle is None:
                raise ClosedError("Context")
            raise BusyError(Status.BUSY, "a call is running on this context")
        try:
            handle = self._handle
            if handle is None:
                raise ClosedError("Context")
            previous = self._job_ref() if self._job_ref is not None else None
            if previous is None or previous.finished:
                # A fresh run: nothing of an earlier one may leak into it. (With
                # a job still running the library answers BUSY below, and that
                # job's state is left alone.)
                with self._state:
                    self._cancel = False
                    self._job_ref = None
                self._pending = None
                self._log.take()
            out = _lib.job_p()
            status = fn(handle, ctypes.byref(params), ctypes.byref(out))
            if status != Status.OK:
                if status == Status.BUSY:  # the context's last error is not changed then
                    raise BusyError(Status.BUSY, "a job or call is running on this context")
                message = self._L.diffuse_ctx_last_error(handle).decode("utf-8", "replace")
                pending = self._log.take()
                if pending is not None:
                    raise pending
                raise error_for(status, message)
            job = Job(self, out, return_numpy, what, outputs=outputs, keep=keep)
            with self._state:
                self._job_ref = weakref.ref(job)
                # A callback may have failed before the job was registered.
                job._pending, self._pending = self._pending, None
            return job
        finally:
            self._lock.release()

    def _take_job_log_error(self, job: Job) -> Optional[BaseException]:
        """An exception the log callback raised during *job* (re-raised by
        Job.result()), while no later run has taken it."""
        with self._state:
            mine = self._job_ref is not None and self._job_ref() is job
        return self._log.take() if mine else None

    def _job_closed(self, job: Job) -> None:
        with self._state:
            if self._job_ref is not None and self._job_ref() is job:
                self._job_ref = None

    def start_generate(
        self,
        prompt: str,
        negative_prompt: Optional[str] = None,
        n: Optional[int] = None,
        size: Size = None,
        steps: int = 30,
        guidance: float = 7.5,
        guidance_rescale: float = 0.0,
        sampler: Union[str, int] = "default",
        seed: Optional[int] = 0,
        clip_skip: int = 0,
        *,
        mode: str = "RGB",
        return_numpy: Optional[bool] = None,
        out: Optional[OutArrays] = None,
    ) -> Job:
        """:meth:`generate` as an asynchronous job (diffuse_job_start_generate):
        returns at once; ``job.result()`` gives what generate() would have.

        Arguments are those of :meth:`generate` and are checked now. The
        library copies them (the prompts too) before this returns, except
        the ``out`` arrays, which it writes from the job's worker thread: the
        job keeps them alive, and they must not be used until it has
        finished (``job.result()`` then returns them).

        Returns:
            A running :class:`Job`; close it (or use it as a context manager).

        Raises:
            BusyError: a job or call is running on this context.
            InvalidArgumentError: bad sizes, counts or values (checked at start).
            ClosedError: the context was closed.
            DiffuseError: any other failure to start.
        """
        p, outputs, keep = self._generate_params(
            prompt, negative_prompt, n, size, steps, guidance, guidance_rescale, sampler, seed, clip_skip, mode, out
        )
        return self._start(self._L.diffuse_job_start_generate, p, return_numpy, "generate", outputs, keep)

    def start_edit(
        self,
        image: ImageInput,
        prompt: str,
        mask: Optional[ImageInput] = None,
        negative_prompt: Optional[str] = None,
        n: Optional[int] = None,
        steps: int = 30,
        guidance: float = 7.5,
        strength: float = 1.0,
        sampler: Union[str, int] = "default",
        seed: Optional[int] = 0,
        mask_feather: float = 0.0,
        *,
        mode: str = "RGB",
        return_numpy: Optional[bool] = None,
        out: Optional[OutArrays] = None,
    ) -> Job:
        """:meth:`edit` as an asynchronous job (diffuse_job_start_edit).
        The library copies the image and mask pixels at start, so they may
        change or go away once this returns (not the ``out`` arrays: see
        :meth:`start_generate`).

        Returns / Raises: as :meth:`start_generate`.
        """
        p, outputs, keep = self._edit_params(
            image, prompt, mask, negative_prompt, n, steps, guidance, strength, sampler, seed, mask_feather, mode, out
        )
        return self._start(self._L.diffuse_job_start_edit, p, return_numpy, "edit", outputs, keep)

    def start_variation(
        self,
        image: ImageInput,
        n: Optional[int] = None,
        strength: float = 0.7,
        prompt: Optional[str] = None,
        negative_prompt: Optional[str] = None,
        steps: int = 30,
        guidance: float = 7.5,
        sampler: Union[str, int] = "default",
        seed: Optional[int] = 0,
        *,
        mode: str = "RGB",
        return_numpy: Optional[bool] = None,
        out: Optional[OutArrays] = None,
    ) -> Job:
        """:meth:`variation` as an asynchronous job
        (diffuse_job_start_variation). The image's pixels are copied at start
        (not the ``out`` arrays: see :meth:`start_generate`).

        Returns / Raises: as :meth:`start_generate`.
        """
        p, outputs, keep = self._variation_params(
            image, n, strength, prompt, negative_prompt, steps, guidance, sampler, seed, mode, out
        )
        return self._start(self._L.diffuse_job_start_variation, p, return_numpy, "variation", outputs, keep)
