"""Job: an asynchronous generate/edit/variation (diffuse_job).

``Context.start_generate`` / ``start_edit`` / ``start_variation`` take the
same arguments as the blocking calls and return at once with a :class:`Job`;
the library runs the call on a worker thread of its own. A host with a frame
loop polls it without ever blocking::

    with ctx.start_generate("a lighthouse", steps=25) as job:
        while not job.poll().finished:
            draw_frame()          # job.poll() also gives stage, step, total
        images = job.result()     # as ctx.generate() would have returned them

The library copies the parameters at start (prompts, and the pixels of
edit/variation inputs), so nothing passed to ``start_*`` has to outlive
that call.

One job (or blocking call) per context at a time: starting a job on a busy
context raises :class:`BusyError` at once. The context is free again as soon
as the job has finished (before it is closed). The context's progress
callback and its preview callback run on the job's worker thread.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Union

from . import _images, _lib
from ._images import ImageOutput
from .enums import JobState, Stage, Status
from .errors import BusyError, ClosedError, DiffuseError, DiffuseTimeoutError, error_for

if TYPE_CHECKING:
    from .context import Context

#: diffuse_job_wait's "no limit".
_WAIT_FOREVER = 0xFFFFFFFF
#: Longest single C wait: longer waits are made of slices of this many ms,
#: so Ctrl-C (delivered between slices) and close() from another thread are
#: never held up for long.
_WAIT_SLICE_MS = 200

_FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands (diffuse_job_status), as :meth:`Job.poll` reports it."""

    state: JobState  #: QUEUED, RUNNING, DONE, FAILED or CANCELLED
    step: int  #: steps done in ``stage``, 0..total
    total: int  #: steps in ``stage``
    stage: Union[Stage, int]  #: stage of the latest progress report (LOAD before the first)
    image_index: int = 0  #: image being worked on
    image_count: int = 0  #: images requested
    elapsed: float = 0.0  #: seconds since the run started, at the latest report

    @property
    def finished(self) -> bool:
        """True once the job is DONE, FAILED or CANCELLED."""
        return self.state in _FINISHED


class Job:
    """An asynchronous run on a :class:`Context`; made by its ``start_*``
    methods, not directly.

    ``poll``, ``wait`` and ``cancel`` may be called from any thread, also
    concurrently. Use the job as a context manager, or call :meth:`close`:
    closing a job that still runs cancels it and waits (about one step) for
    its worker. After close() every method but ``close`` raises
    :class:`ClosedError`; nothing reaches the C library with a freed handle.

    The job keeps its context (and so the model) open while it lives.
    """

    def __init__(
        self,
        ctx: "Context",
        handle: Any,
        return_numpy: Optional[bool],
        what: str,
        outputs: Optional[List[Any]] = None,
        keep: Optional[List[Any]] = None,
    ):
        self._handle: Optional[Any] = handle
        self._ctx = ctx
        self._L = ctx._L
        self._return_numpy = return_numpy
        self._what = what
        self._cond = threading.Condition()  # guards _handle, _users, _closing
        self._users = 0  # C calls in flight on _handle
        self._closing = False
        self._result_lock = threading.Lock()  # diffuse_job_result: one thread at a time
        self._images: Optional[List[ImageOutput]] = None  # the result, once taken
        #: An exception raised by the context's progress or preview callback
        #: while this job ran; re-raised by result().
        self._pending: Optional[BaseException] = None
        #: The out= arrays the library writes into (the result), and the C
        #: structs pointing to them: referenced until the job is closed, so
        #: the worker never writes into freed memory.
        self._outputs = outputs
        self._keep = keep

    # -- handle bookkeeping ----------------------------------------------------

    def _enter(self) -> Any:
        with self._cond:
            if self._handle is None or self._closing:
                raise ClosedError("Job")
            self._users += 1
            return self._handle

    def _leave(self) -> None:
        with self._cond:
            self._users -= 1
            if self._users == 0:
                self._cond.notify_all()

    def _not_from_worker(self, what: str) -> None:
        if self._ctx._in_callback():
            raise BusyError(
                Status.BUSY, f"Job.{what}() cannot be called from the context's own callback (the job's worker)"
            )

    # -- state -----------------------------------------------------------------

    def poll(self) -> JobStatus:
        """Where the job stands, without blocking (diffuse_job_poll).

        Raises:
            ClosedError: the job was closed.
        """
        handle = self._enter()
        try:
            s = _lib.diffuse_job_status()
            s.struct_size = ctypes.sizeof(s)
            status = self._L.diffuse_job_poll(handle, ctypes.byref(s))
            if status != Status.OK:
                raise error_for(status, "diffuse_job_poll failed")
        finally:
            self._leave()
        try:
            state: Any = JobState(s.state)
        except ValueError:
            state = int(s.state)
        try:
            stage: Any = Stage(s.stage)
        except ValueError:
            stage = int(s.stage)
        return JobStatus(state, s.step, s.total, stage, s.image_index, s.image_count, s.elapsed_seconds)

    @property
    def finished(self) -> bool:
        """True once the job is DONE, FAILED or CANCELLED (polls; True after close())."""
        try:
            return self.poll().finished
        except ClosedError:
            return True

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the job has finished or *timeout* seconds have passed.

        Args:
            timeout: seconds; None waits as long as it takes, 0 just checks.

        Returns:
            True when the job has finished (DONE, FAILED or CANCELLED: ask
            :meth:`result` for the outcome), False when the time ran out.

        Raises:
            ClosedError: the job was closed.
            BusyError: called from the context's callback (it runs on the
                job's own worker, which would wait for itself).
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None or >= 0, not {timeout!r}")
        self._not_from_worker("wait")
        left_ms = None if timeout is None else int(round(timeout * 1000))
        while True:
            slice_ms = _WAIT_SLICE_MS if left_ms is None else min(left_ms, _WAIT_SLICE_MS)
            handle = self._enter()
            try:
                status = self._L.diffuse_job_wait(handle, slice_ms)
            finally:
                self._leave()
            if status == Status.OK:
                return True
            if status != Status.TIMEOUT:
                raise error_for(status, "diffuse_job_wait failed")
            if left_ms is not None:
                left_ms -= slice_ms
                if left_ms <= 0:
                    return False

    def cancel(self) -> None:
        """Asks the job to stop (diffuse_job_cancel); returns at once. The
        run stops within one step and :meth:`result` then raises
        :class:`CancelledError`. A finished job keeps its outcome; calling
        it again is harmless.

        Raises:
            ClosedError: the job was closed.
        """
        handle = self._enter()
        try:
            self._L.diffuse_job_cancel(handle)
        finally:
            self._leave()

    def result(self, timeout: Optional[float] = None) -> List[ImageOutput]:
        """The job's images, as the blocking call returns them (PIL images
        when Pillow is installed, numpy arrays otherwise, or as
        ``return_numpy`` asked at start; with ``out=``, those arrays). Waits
        for the job first, like
        ``concurrent.futures.Future.result``. May be called again: the same
        list comes back.

        Args:
            timeout: seconds to wait; None waits as long as it takes.

        Raises:
            DiffuseTimeoutError: the job had not finished within *timeout*.
            CancelledError: the job was cancelled (cancel(), Context.cancel(),
                the progress callback returning true, or the context closed).
            ClosedError: the job was closed.
            DiffuseError: the run's own error, with the library's message;
                or the exception a progress/preview callback raised during
                the run, re-raised as it was.
        """
        if self._images is not None:
            return list(self._images)
        if not self.wait(timeout):
            raise DiffuseTimeoutError(Status.TIMEOUT, f"the {self._what} job did not finish within {timeout} s")
        handle = self._enter()
        try:
            with self._result_lock:
                if self._images is not None:
                    return list(self._images)
                out = ctypes.POINTER(_lib.diffuse_images)()
                status = self._L.diffuse_job_result(handle, ctypes.byref(out))
                try:
                    message = self._L.diffuse_job_last_error(handle).decode("utf-8", "replace")
                    pending = self._pending
                    if pending is None:
                        pending = self._ctx._take_job_log_error(self)
                    if pending is not None:
                        raise pending
                    if status != Status.OK:
                        raise error_for(status, message)
                    if not out:
                        raise DiffuseError(Status.INTERNAL, "the job finished without images")
                    if self._outputs is not None:
                        self._images = list(self._outputs)
                    else:
                        self._images = _images.from_c_images(out.contents, self._return_numpy)
                    return list(self._images)
                finally:
                    self._L.diffuse_images_free(out)
        finally:
            self._leave()

    @property
    def last_error(self) -> str:
        """diffuse_job_last_error(): the message of a failed or cancelled
        job; "" while it runs and after success."""
        handle = self._enter()
        try:
            return self._L.diffuse_job_last_error(handle).decode("utf-8", "replace")
        finally:
            self._leave()

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        """Frees the job (diffuse_job_free). A job still running is cancelled
        first and its worker joined (about one step). Images not taken with
        :meth:`result` are dropped. Idempotent; waits for poll/wait calls of
        other threads to return (they see the cancellation).

        Raises:
            BusyError: called from the context's callback (the job's worker).
        """
        with self._cond:
            if self._handle is None:
                return
        self._not_from_worker("close")
        with self._cond:
            if self._handle is None:
                return
            first = not self._closing
            self._closing = True
            handle = self._handle
            if first:
                # Concurrent waits return within a step once cancelled.
                self._L.diffuse_job_cancel(handle)
            while self._users > 0 or (not first and self._handle is not None):
                self._cond.wait()
            if not first:
                return
            self._handle = None
        try:
            self._L.diffuse_job_free(handle)
        finally:
            with self._cond:
                self._cond.notify_all()
            self._ctx._job_closed(self)

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._handle is None

    def __enter__(self) -> "Job":
        if self.closed:
            raise ClosedError("Job")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        if self.closed:
            return f"<diffuse.Job {self._what} closed>"
        try:
            s = self.poll()
            return f"<diffuse.Job {self._what} {s.state.name.lower()} {getattr(s.stage, 'name', s.stage)} {s.step}/{s.total}>"
        except Exception:
            return f"<diffuse.Job {self._what}>"
