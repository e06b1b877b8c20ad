"""Progress callbacks: order of reports, cancelling by return value, by an
exception, by Context.cancel() from another thread, and re-entrant use."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from typing import List

import pytest
from conftest import FAST

import diffuse
from diffuse import Progress, Stage


def test_progress_reports_increasing_steps(ctx: diffuse.Context) -> None:
    seen: List[Progress] = []
    ctx.progress = seen.append
    ctx.generate("x", n=2, **dict(FAST, steps=3))
    stages = [p.stage for p in seen]
    assert stages[0] == Stage.TEXT and stages[-1] == Stage.DECODE
    assert all(isinstance(p, Progress) and isinstance(p.stage, Stage) for p in seen)
    for image in (0, 1):
        denoise = [p for p in seen if p.stage == Stage.DENOISE and p.image_index == image]
        assert [p.step for p in denoise] == list(range(1, denoise[0].total + 1))
        assert denoise[0].total >= 3
    assert all(p.image_count == 2 for p in seen)
    elapsed = [p.elapsed for p in seen]
    assert elapsed == sorted(elapsed)
    stage, step, total = seen[-1][:3]  # unpacks like a tuple
    assert (stage, step, total) == (Stage.DECODE, 1, 1)


def test_returning_true_cancels_and_context_stays_usable(ctx: diffuse.Context) -> None:
    calls: List[Progress] = []

    def stop_at_first_step(p: Progress) -> bool:
        calls.append(p)
        return p.stage == Stage.DENOISE and p.step == 1

    ctx.progress = stop_at_first_step
    with pytest.raises(diffuse.CancelledError) as err:
        ctx.generate("x", **dict(FAST, steps=5))
    assert err.value.status == diffuse.Status.CANCELLED
    assert "cancel" in err.value.message
    assert calls[-1].stage == Stage.DENOISE and calls[-1].step == 1  # stopped at once
    ctx.progress = None
    assert ctx.generate("x", **FAST)[0].size == (32, 32)


def test_exception_in_callback_cancels_and_is_reraised(ctx: diffuse.Context) -> None:
    calls: List[Progress] = []

    class Boom(Exception):
        pass

    def explode(p: Progress) -> None:
        calls.append(p)
        if p.stage == Stage.DENOISE:
            raise Boom("from the callback")

    ctx.progress = explode
    with pytest.raises(Boom, match="from the callback") as err:
        ctx.generate("x", **dict(FAST, steps=5))
    assert any(f.name == "explode" for f in err.traceback)  # the callback's own frame
    assert calls[-1].stage == Stage.DENOISE and calls[-1].step == 1  # no report after it
    ctx.progress = None
    assert ctx.generate("x", **FAST)[0].size == (32, 32)


def test_cancel_from_another_thread(ctx: diffuse.Context) -> None:
    started, cancelled = threading.Event(), threading.Event()
    steps: List[int] = []

    def progress(p: Progress) -> None:
        if p.stage == Stage.DENOISE:
            steps.append(p.step)
            started.set()
            cancelled.wait(30)

    ctx.progress = progress
    result: List[BaseException] = []

    def run() -> None:
        try:
            ctx.generate("x", **dict(FAST, steps=6))
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    ctx.cancel()
    cancelled.set()
    t.join(60)
    assert not t.is_alive()
    assert len(result) == 1 and isinstance(result[0], diffuse.CancelledError)
    assert steps == [1]
    ctx.progress = None
    ctx.cancel()  # idle: no effect on the next call
    assert ctx.generate("x", **FAST)[0].size == (32, 32)


def test_reentrant_use_from_callback_is_busy(ctx: diffuse.Context) -> None:
    def reenter(p: Progress) -> None:
        ctx.generate("inner", **FAST)

    ctx.progress = reenter
    with pytest.raises(diffuse.BusyError) as err:
        ctx.generate("outer", **FAST)
    assert err.value.status == diffuse.Status.BUSY

    ctx.progress = lambda p: ctx.close()
    with pytest.raises(diffuse.BusyError):
        ctx.generate("outer", **FAST)
    assert not ctx.closed
    ctx.progress = None
    assert ctx.generate("x", **FAST)[0].size == (32, 32)


def test_close_from_another_thread_cancels_and_waits(model: diffuse.Model) -> None:
    c = diffuse.Context(model, threads=1)
    started = threading.Event()
    c.progress = lambda p: started.set()
    errors: List[BaseException] = []

    def run() -> None:
        try:
            c.generate("x", **dict(FAST, steps=50))
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    c.close()  # cancels the running call, waits for it, then frees
    t.join(60)
    assert c.closed and not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], diffuse.CancelledError)


def test_log_callback_of_a_context(model: diffuse.Model) -> None:
    seen = []
    with diffuse.Context(model, device="auto", log=lambda lv, m: seen.append((lv, m)), log_level="info") as c:
        with pytest.raises(diffuse.InvalidArgumentError):
            c.generate("x", **dict(FAST, size=(30, 30)))
    assert any(lv == diffuse.LogLevel.ERROR and "multiples of 8" in m for lv, m in seen)


def test_ctrl_c_cancels_the_call(model_path: str) -> None:
    """SIGINT during a generate surfaces as KeyboardInterrupt from the call
    (through the progress callback), promptly, and the context still works."""
    code = textwrap.dedent(
        f"""
        import sys, diffuse
        ctx = diffuse.Context(diffuse.Model({model_path!r}), threads=1)
        ctx.progress = lambda p: print("running", flush=True) if p.step == 1 and p.stage == diffuse.Stage.DENOISE else None
        try:
            ctx.generate("x", steps=500, guidance=1.0, sampler="euler", size=(32, 32))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        ctx.progress = None
        print("usable", ctx.generate("x", steps=1, guidance=1.0, size=(16, 16))[0].size, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.split("\n")[:2] == ["interrupted", "usable (16, 16)"], out + err
