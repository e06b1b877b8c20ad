"""Asynchronous jobs (Context.start_generate/edit/variation -> Job) and
previews (Context.set_preview): start/poll/wait/result, images equal to the
blocking calls', cancel, BUSY on a second start, wait timeouts, exceptions
in callbacks, closed handles, and a context closed under a running job."""

from __future__ import annotations

import threading
import time
from typing import Any, List, Tuple

import numpy as np
import pytest
from conftest import FAST

import diffuse
from diffuse import JobState, Progress, Stage, Status

#: A run long enough to still be going when the test acts on it (1000 steps
#: at 64x64 take many seconds on the tiny model; every test cancels it).
LONG = dict(steps=1000, guidance=1.0, sampler="euler", size=(64, 64))


def _wait_for_denoise(job: diffuse.Job, step: int = 1, limit: float = 60.0) -> diffuse.JobStatus:
    """Polls (as a frame loop would) until the job is denoising at *step* or has finished."""
    deadline = time.monotonic() + limit
    while True:
        s = job.poll()
        if s.finished or (s.stage == Stage.DENOISE and s.step >= step):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"job never reached denoise step {step}: {s}")
        time.sleep(0.002)


def _arrays(images: List[Any]) -> List[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_start_poll_wait_result_matches_generate(ctx: diffuse.Context) -> None:
    ref = ctx.generate("a red cube", n=2, seed=1234, **dict(FAST, steps=3))
    with ctx.start_generate("a red cube", n=2, seed=1234, **dict(FAST, steps=3)) as job:
        assert isinstance(job, diffuse.Job)
        polls: List[diffuse.JobStatus] = []
        while True:
            s = job.poll()
            polls.append(s)
            if s.finished:
                break
            time.sleep(0.001)
        assert all(isinstance(p, diffuse.JobStatus) and isinstance(p.state, JobState) for p in polls)
        last = polls[-1]
        assert last.state == JobState.DONE
        assert (last.stage, last.step, last.total, last.image_count) == (Stage.DECODE, 1, 1, 2)
        assert job.wait() is True and job.wait(timeout=0) is True
        images = job.result()
        assert job.last_error == ""
        # the same conversion as generate(): PIL images carrying their seeds
        assert [im.info["seed"] for im in images] == [1234, 1235]
        assert all(im.size == (32, 32) and im.mode == "RGB" for im in images)
        for a, b in zip(_arrays(images), _arrays(ref)):
            assert np.array_equal(a, b)
        assert job.result() == images  # asking again gives the same images
    assert job.closed


def test_result_as_numpy_and_rgba(ctx: diffuse.Context) -> None:
    with ctx.start_generate("x", seed=5, mode="RGBA", return_numpy=True, **FAST) as job:
        (arr,) = job.result()  # waits for the job
    assert isinstance(arr, np.ndarray) and arr.shape == (32, 32, 4) and arr.dtype == np.uint8
    assert (arr[..., 3] == 255).all()
    (ref,) = ctx.generate("x", seed=5, mode="RGBA", return_numpy=True, **FAST)
    assert np.array_equal(arr, ref)


def test_parameters_may_go_away_after_start(ctx: diffuse.Context) -> None:
    # The library copies the params (and input pixels) at start.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ref = ctx.variation(pixels.copy(), steps=4, strength=0.5, seed=3, return_numpy=True)
    image = pixels.copy()
    job = ctx.start_variation(image, steps=4, strength=0.5, seed=3, return_numpy=True)
    image[:] = 0  # the job must not see this
    del image
    try:
        got = job.result()
    finally:
        job.close()
    assert np.array_equal(got[0], ref[0])


def test_edit_job_matches_edit(ctx: diffuse.Context) -> None:
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    img[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    ref = ctx.edit(img, "a green leaf", mask=mask, steps=3, seed=9, return_numpy=True)
    with ctx.start_edit(img, "a green leaf", mask=mask, steps=3, seed=9, return_numpy=True) as job:
        got = job.result(timeout=120)
    assert np.array_equal(got[0], ref[0])


def test_cancel_raises_cancelled_and_context_stays_usable(ctx: diffuse.Context) -> None:
    with ctx.start_generate("a blue square", seed=1, **LONG) as job:
        s = _wait_for_denoise(job, 1)
        assert s.state == JobState.RUNNING, s
        t0 = time.monotonic()
        job.cancel()
        assert job.wait(timeout=60) is True
        took = time.monotonic() - t0
        s = job.poll()
        assert s.state == JobState.CANCELLED
        assert s.step < s.total  # stopped early
        with pytest.raises(diffuse.CancelledError) as err:
            job.result()
        assert err.value.status == Status.CANCELLED
        assert job.last_error != ""
        job.cancel()  # again, after the end: harmless
    assert took < 30, f"cancel took {took:.1f} s"
    assert ctx.generate("x", **FAST)[0].size == (32, 32)


def test_context_cancel_cancels_its_job(ctx: diffuse.Context) -> None:
    with ctx.start_generate("a blue square", **LONG) as job:
        _wait_for_denoise(job, 1)
        ctx.cancel()
        assert job.wait(timeout=60)
        with pytest.raises(diffuse.CancelledError):
            job.result()


def test_second_start_on_busy_context_raises_busy(ctx: diffuse.Context) -> None:
    with ctx.start_generate("a blue square", **LONG) as job:
        _wait_for_denoise(job, 1)
        with pytest.raises(diffuse.BusyError) as err:
            ctx.start_generate("another", **FAST)
        assert err.value.status == Status.BUSY
        with pytest.raises(diffuse.BusyError):
            ctx.start_variation(np.zeros((64, 64, 3), np.uint8), steps=2)
        with pytest.raises(diffuse.BusyError) as err:
            ctx.generate("blocking", **FAST)  # the blocking calls answer BUSY too, without waiting
        assert err.value.status == Status.BUSY
        with pytest.raises(diffuse.BusyError):
            ctx.set_preview(lambda im, p: None)
        assert job.poll().state == JobState.RUNNING  # the running job is untouched
        job.cancel()
        assert job.wait(timeout=60)
        with pytest.raises(diffuse.CancelledError):
            job.result()
    # free again: a new job on the same context runs to the end
    with ctx.start_generate("again", **FAST) as job2:
        assert len(job2.result()) == 1


def test_context_is_free_once_the_job_finished_before_close(ctx: diffuse.Context) -> None:
    job = ctx.start_generate("x", **FAST)
    try:
        assert job.wait(timeout=60)
        # not closed yet, but finished: the context takes another job and calls
        with ctx.start_generate("y", **FAST) as other:
            assert other.wait(timeout=60)
        assert len(ctx.generate("z", **FAST)) == 1
        assert len(job.result()) == 1
    finally:
        job.close()


def test_wait_timeout_returns_false(ctx: diffuse.Context) -> None:
    with ctx.start_generate("a blue square", **LONG) as job:
        _wait_for_denoise(job, 1)
        t0 = time.monotonic()
        assert job.wait(timeout=0.05) is False
        assert 0.04 <= time.monotonic() - t0 < 5
        assert job.wait(timeout=0) is False
        with pytest.raises(diffuse.DiffuseTimeoutError) as err:
            job.result(timeout=0.01)
        assert err.value.status == Status.TIMEOUT and isinstance(err.value, TimeoutError)
        with pytest.raises(ValueError):
            job.wait(timeout=-1)
        job.cancel()
        assert job.wait() is True


def test_wait_from_another_thread_returns_when_cancelled(ctx: diffuse.Context) -> None:
    with ctx.start_generate("x", **LONG) as job:
        done: List[bool] = []
        t = threading.Thread(target=lambda: done.append(job.wait()))
        t.start()
        _wait_for_denoise(job, 1)
        job.cancel()
        t.join(60)
        assert done == [True]


def test_closed_job_raises_never_crashes(ctx: diffuse.Context) -> None:
    job = ctx.start_generate("x", **LONG)
    _wait_for_denoise(job, 1)
    t0 = time.monotonic()
    job.close()  # cancels the running job and joins its worker
    assert time.monotonic() - t0 < 30
    assert job.closed
    job.close()  # idempotent
    for call in (job.poll, job.wait, job.cancel, job.result, lambda: job.last_error):
        with pytest.raises(diffuse.ClosedError):
            call()
    with pytest.raises(diffuse.ClosedError):
        with job:
            pass
    assert job.finished  # a closed job counts as finished
    assert "closed" in repr(job)
    # the context was let go of
    assert len(ctx.generate("x", **FAST)) == 1


def test_start_errors(ctx: diffuse.Context, model: diffuse.Model) -> None:
    with pytest.raises(diffuse.InvalidArgumentError) as err:
        ctx.start_generate("x", size=(60, 64), steps=1)  # checked at start
    assert "60" in err.value.message or "multiple" in err.value.message
    with pytest.raises(TypeError):
        ctx.start_generate(123)  # type: ignore[arg-type]
    c = diffuse.Context(model, device="cpu")
    c.close()
    with pytest.raises(diffuse.ClosedError):
        c.start_generate("x", **FAST)
    with pytest.raises(diffuse.ClosedError):
        c.set_preview(None)


def test_closing_the_context_cancels_its_job(model: diffuse.Model) -> None:
    c = diffuse.Context(model, device="cpu")
    job = c.start_generate("x", **LONG)
    _wait_for_denoise(job, 1)
    c.close()  # cancels the job and waits for its worker to let go of the context
    # (lib/job.c frees the context before it records CANCELLED, so the end
    # may be observed a moment after close() returns)
    assert job.wait(timeout=30) is True
    assert job.poll().state == JobState.CANCELLED
    with pytest.raises(diffuse.CancelledError):
        job.result()
    job.close()


def test_job_keeps_its_context_alive(model: diffuse.Model) -> None:
    job = diffuse.Context(model, device="cpu").start_generate("x", **FAST)  # no other reference to the context
    import gc

    gc.collect()
    try:
        assert len(job.result(timeout=60)) == 1
    finally:
        job.close()


def test_progress_callback_runs_on_the_job_worker(ctx: diffuse.Context) -> None:
    seen: List[Tuple[Progress, int]] = []
    ctx.progress = lambda p: seen.append((p, threading.get_ident()))
    try:
        with ctx.start_generate("x", **dict(FAST, steps=3)) as job:
            job.result()
    finally:
        ctx.progress = None
    denoise = [p.step for p, _ in seen if p.stage == Stage.DENOISE]
    assert denoise == [1, 2, 3]
    assert {tid for _, tid in seen} and threading.get_ident() not in {tid for _, tid in seen}


def test_exception_in_progress_callback_cancels_job_and_is_reraised(ctx: diffuse.Context) -> None:
    class Boom(Exception):
        pass

    def progress(p: Progress) -> None:
        if p.stage == Stage.DENOISE and p.step == 2:
            raise Boom("from the callback")

    ctx.progress = progress
    try:
        with ctx.start_generate("x", **LONG) as job:
            assert job.wait(timeout=60)
            assert job.poll().state == JobState.CANCELLED
            with pytest.raises(Boom):
                job.result()
    finally:
        ctx.progress = None
    assert len(ctx.generate("x", **FAST)) == 1  # nothing leaks into the next call


def test_preview_callback_is_called(ctx: diffuse.Context, model: diffuse.Model) -> None:
    scale = model.info["vae_scale_factor"]
    got: List[Tuple[Any, Progress, int]] = []
    ctx.set_preview(lambda im, p: got.append((im, p, threading.get_ident())), every=2)
    assert ctx.preview is not None
    try:
        with ctx.start_generate("a red circle", **dict(FAST, steps=5, size=(64, 64))) as job:
            job.result()
    finally:
        ctx.set_preview(None)
    assert ctx.preview is None
    steps = [p.step for _, p, _ in got]
    assert steps == [2, 4, 5], steps  # every 2 steps, and the last
    assert all(p.stage == Stage.DENOISE and p.total == 5 for _, p, _ in got)
    for im, _, _ in got:
        assert im.mode == "RGB" and im.size == (64 // scale, 64 // scale)
    assert threading.get_ident() not in {tid for _, _, tid in got}  # the job's worker
    # previews differ as the sample changes
    assert not np.array_equal(np.asarray(got[0][0]), np.asarray(got[-1][0]))

    # removed: no more previews
    n = len(got)
    ctx.generate("x", **FAST)
    assert len(got) == n


def test_preview_with_blocking_call_and_numpy(ctx: diffuse.Context) -> None:
    got: List[np.ndarray] = []
    ctx.set_preview(lambda im, p: got.append(im), every=1, return_numpy=True)
    try:
        ctx.generate("x", **dict(FAST, steps=3))
    finally:
        ctx.set_preview(None)
    assert len(got) == 3
    assert all(isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in got)


def test_exception_in_preview_cancels_and_is_reraised(ctx: diffuse.Context) -> None:
    class Boom(Exception):
        pass

    calls: List[int] = []

    def preview(im: Any, p: Progress) -> None:
        calls.append(p.step)
        raise Boom("preview failed")

    ctx.set_preview(preview, every=1)
    try:
        with ctx.start_generate("x", **LONG) as job:
            assert job.wait(timeout=60)
            assert job.poll().state == JobState.CANCELLED
            with pytest.raises(Boom):
                job.result()
        assert calls == [1]  # cancelled at the step it raised
        with pytest.raises(Boom):  # blocking calls re-raise it too
            ctx.generate("x", **dict(FAST, steps=3))
    finally:
        ctx.set_preview(None)
    assert len(ctx.generate("x", **FAST)) == 1  # context usable afterwards


def test_set_preview_arguments(ctx: diffuse.Context) -> None:
    with pytest.raises(diffuse.InvalidArgumentError):
        ctx.set_preview(lambda im, p: None, every=0)
    with pytest.raises(TypeError):
        ctx.set_preview("not callable")  # type: ignore[arg-type]
    ctx.set_preview(None, every=0)  # turning off ignores every


def test_job_from_its_own_callback_is_refused(ctx: diffuse.Context) -> None:
    # Calls that would wait for the job's worker from that very worker are
    # refused with BUSY instead of deadlocking.
    errors: List[BaseException] = []
    holder: List[diffuse.Job] = []
    ready = threading.Event()

    def progress(p: Progress) -> bool:
        if p.stage == Stage.DENOISE and p.step == 1:
            assert ready.wait(30)
            for call in (holder[0].wait, holder[0].close, ctx.close, lambda: ctx.start_generate("x", **FAST)):
                try:
                    call()
                except diffuse.BusyError as e:
                    errors.append(e)
            return True  # cancel
        return False

    ctx.progress = progress
    try:
        job = ctx.start_generate("x", **LONG)
        holder.append(job)
        ready.set()
        with job:
            with pytest.raises(diffuse.CancelledError):
                job.result(timeout=60)
    finally:
        ctx.progress = None
    assert len(errors) == 4 and all(e.status == Status.BUSY for e in errors), errors
    assert not ctx.closed
    assert len(ctx.generate("x", **FAST)) == 1
