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
from ._images import ImageInput, ImageOutput
from .enums import Stage, Status, parse_device, parse_log_level, parse_precision, parse_sampler
from .errors import BusyError, ClosedError, InvalidArgumentError, error_for
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
            if ctx is not None and ctx._pending is None:
                ctx._pending = e
            return 1

    return _lib.progress_fn(trampoline)


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
        if self._owner == threading.get_ident():
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
        stop: it raises CancelledError within a step. No effect when idle."""
        with self._state:
            if self._running:
                self._cancel = True

    # -- callbacks ----------------------------------------------------------

    def _on_progress(self, p: Any) -> int:
        try:
            if self._cancel:
                return 1
            fn = self.progress
            if fn is None:
                return 0
            c = p.contents
            try:
                stage: Any = Stage(c.stage)
            except ValueError:
                stage = int(c.stage)
            report = Progress(stage, c.step, c.total, c.image_index, c.image_count, c.elapsed_seconds)
            return 1 if fn(report) else 0
        except BaseException as e:  # noqa: B902 - re-raised by the call
            if self._pending is None:
                self._pending = e
            return 1

    # -- running calls ------------------------------------------------------

    def _run(self, fn: Any, params: Any, return_numpy: Optional[bool]) -> List[ImageOutput]:
        """Runs a C image call under the context's lock; turns its status,
        message and any callback exception into a result or a raise."""
        me = threading.get_ident()
        if self._owner == me:
            raise BusyError(Status.BUSY, "a Context cannot be used from its own callback")
        with self._lock:
            handle = self._handle
            if handle is None:
                raise ClosedError("Context")
            self._owner = me
            with self._state:
                self._running, self._cancel = True, False
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
                return _images.from_c_images(out.contents, return_numpy)
            finally:
                self._L.diffuse_images_free(out)

    def generate(
        self,
        prompt: str,
        negative_prompt: Optional[str] = None,
        n: int = 1,
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
    ) -> List[ImageOutput]:
        """Text to image (DALL·E images/generations).

        Args:
            prompt: what to draw (UTF-8; the first 75 tokens count).
            negative_prompt: what to steer away from; None = unconditional.
            n: number of images, 1..16; image i uses seed + i.
            size: None for the model's native size, an int for a square, or
                (width, height); multiples of 8.
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

        Returns:
            A list of n images (PIL images carry ``info["seed"]``).

        Raises:
            InvalidArgumentError: bad sizes, counts or values.
            CancelledError: the progress callback returned true (or cancel()).
            ClosedError: the context was closed.
            DiffuseError: any other failure; the exception raised by the
                progress callback, if it raised one.
        """
        L = self._L
        p = _lib.new_params(_lib.diffuse_generate_params, L.diffuse_generate_params_init)
        p.prompt = encode_text(prompt, "prompt")
        p.negative_prompt = _opt_text(negative_prompt, "negative_prompt")
        p.n_images = _u32(n, "n")
        p.width, p.height = _size(size)
        p.steps = _u32(steps, "steps")
        p.guidance_scale = float(guidance)
        p.guidance_rescale = float(guidance_rescale)
        p.sampler = parse_sampler(sampler)
        p.seed = _seed(seed)
        p.clip_skip = _u32(clip_skip, "clip_skip")
        p.output.format = _images.output_format(mode)[0]
        return self._run(L.diffuse_generate, p, return_numpy)

    def edit(
        self,
        image: ImageInput,
        prompt: str,
        mask: Optional[ImageInput] = None,
        negative_prompt: Optional[str] = None,
        n: int = 1,
        steps: int = 30,
        guidance: float = 7.5,
        strength: float = 1.0,
        sampler: Union[str, int] = "default",
        seed: Optional[int] = 0,
        mask_feather: float = 0.0,
        *,
        mode: str = "RGB",
        return_numpy: Optional[bool] = None,
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
            Others: as :meth:`generate`.

        Returns / Raises: as :meth:`generate`.
        """
        L = self._L
        p = _lib.new_params(_lib.diffuse_edit_params, L.diffuse_edit_params_init)
        arr = _images.to_array(image, "image")
        c_img = _images.c_image(arr)
        p.image = ctypes.pointer(c_img)
        if mask is not None:
            marr = _images.to_array(mask, "mask", mask=True)
            c_mask = _images.c_image(marr)
            p.mask = ctypes.pointer(c_mask)
        p.prompt = encode_text(prompt, "prompt")
        p.negative_prompt = _opt_text(negative_prompt, "negative_prompt")
        p.n_images = _u32(n, "n")
        p.steps = _u32(steps, "steps")
        p.guidance_scale = float(guidance)
        p.strength = float(strength)
        p.sampler = parse_sampler(sampler)
        p.seed = _seed(seed)
        p.mask_feather = float(mask_feather)
        p.output.format = _images.output_format(mode)[0]
        # arr / marr stay referenced by these locals until the call returns.
        return self._run(L.diffuse_edit, p, return_numpy)

    def variation(
        self,
        image: ImageInput,
        n: int = 1,
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
    ) -> List[ImageOutput]:
        """Variations of *image* (DALL·E images/variations): the image is
        encoded, noised to *strength* and denoised from n seeds.

        Args:
            image: a PIL image, a uint8 array (H, W, 3|4) or a path.
            n: number of variations, 1..16; variation i uses seed + i.
            strength: 0..1; higher strays further from the image.
            prompt: optional text to steer with (guidance applies only then).
            Others: as :meth:`generate`.

        Returns / Raises: as :meth:`generate`.
        """
        L = self._L
        p = _lib.new_params(_lib.diffuse_variation_params, L.diffuse_variation_params_init)
        arr = _images.to_array(image, "image")
        c_img = _images.c_image(arr)
        p.image = ctypes.pointer(c_img)
        p.prompt = _opt_text(prompt, "prompt")
        p.negative_prompt = _opt_text(negative_prompt, "negative_prompt")
        p.n_images = _u32(n, "n")
        p.steps = _u32(steps, "steps")
        p.guidance_scale = float(guidance)
        p.strength = float(strength)
        p.sampler = parse_sampler(sampler)
        p.seed = _seed(seed)
        p.output.format = _images.output_format(mode)[0]
        return self._run(L.diffuse_variation, p, return_numpy)
