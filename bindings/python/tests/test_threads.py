"""Threads: two contexts generating at the same time give the images each
gives alone; the GIL is released during the C call; one context shared by
two threads serialises its calls."""

from __future__ import annotations

import threading
import time
from typing import Dict, List

import numpy as np
from conftest import FAST

import diffuse
from diffuse import Progress, Stage

JOBS = [("a red apple", 11), ("a green field", 22)]


def _generate(ctx: diffuse.Context, prompt: str, seed: int) -> np.ndarray:
    return ctx.generate(prompt, seed=seed, return_numpy=True, **FAST)[0]


def test_two_threads_two_contexts(model: diffuse.Model) -> None:
    contexts = [diffuse.Context(model, threads=1) for _ in JOBS]
    try:
        reference = [_generate(contexts[0], p, s) for p, s in JOBS]
        barrier = threading.Barrier(len(JOBS))
        results: Dict[int, np.ndarray] = {}
        errors: List[BaseException] = []

        def worker(i: int) -> None:
            try:
                barrier.wait(30)
                results[i] = _generate(contexts[i], *JOBS[i])
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(JOBS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        for i in range(len(JOBS)):
            assert np.array_equal(results[i], reference[i]), f"thread {i} image differs"
    finally:
        for c in contexts:
            c.close()


def test_gil_is_released_during_generate(model: diffuse.Model) -> None:
    """While the worker is inside the C call between two progress reports,
    the main thread keeps running Python code."""
    ticks = [0]
    at_report: List[int] = []

    def progress(p: Progress) -> None:
        if p.stage == Stage.DENOISE:
            at_report.append(ticks[0])

    with diffuse.Context(model, threads=1, progress=progress) as c:
        t = threading.Thread(target=c.generate, args=("x",), kwargs=dict(FAST, steps=3, size=(48, 48)))
        t.start()
        while t.is_alive():
            ticks[0] += 1
            time.sleep(0.001)
        t.join()
    gaps = np.diff(at_report)
    assert len(gaps) >= 2 and gaps.max() >= 3, f"main thread ticks between denoise steps: {list(gaps)}"


def test_one_context_shared_by_two_threads_serialises(ctx: diffuse.Context) -> None:
    reference = [_generate(ctx, p, s) for p, s in JOBS]
    results: Dict[int, np.ndarray] = {}

    def worker(i: int) -> None:
        results[i] = _generate(ctx, *JOBS[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(JOBS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in range(len(JOBS)):
        assert np.array_equal(results[i], reference[i])
