"""Since 0.3: Model.estimate_memory, Model.info's weight_dtype and
host_bytes, diffuse.list_devices, Context.device, Context.set_preview_decode
and progress (with cancelling) while a model loads. Since 0.4:
Context.memory and CUDA estimates."""

from __future__ import annotations

import threading
from typing import Any, List, Tuple

import pytest
from conftest import FAST

import diffuse
from diffuse import Progress, Stage

MiB = 1 << 20


# -- Model.info ------------------------------------------------------------------


def test_info_weight_dtype_and_host_bytes(model: diffuse.Model) -> None:
    info = model.info
    params = info["unet_parameters"] + info["vae_parameters"] + info["text_encoder_parameters"]
    # the dtype the files hold most bytes in, told apart by bytes per parameter
    per_param = info["weight_bytes"] / params
    assert info["weight_dtype"] in ("f32", "f16", "bf16")
    assert (info["weight_dtype"] == "f32") == (per_param > 3), (info["weight_dtype"], per_param)
    # the loaded model keeps every weight as float32 (copies or file pages)
    assert abs(info["host_bytes"] - 4 * params) <= 0.05 * 4 * params, (info["host_bytes"], params)


# -- Model.estimate_memory ---------------------------------------------------------


def _parts_sum(e: diffuse.MemoryEstimate) -> int:
    return e.model_host_bytes + e.context_host_bytes + e.run_host_bytes + e.output_bytes


def test_estimate_memory_defaults(model: diffuse.Model) -> None:
    e = model.estimate_memory()
    assert isinstance(e, diffuse.MemoryEstimate)
    assert e.host_bytes == _parts_sum(e)
    assert e.model_host_bytes == model.info["host_bytes"]
    w, h = model.info["native_size"]
    assert e.output_bytes == w * h * 3  # one RGB image of the native size
    assert 0 < e.context_host_bytes < 512 * MiB  # the tiny test model at 64x64
    assert 0 < e.run_host_bytes < e.context_host_bytes
    assert e.device_bytes == 0 and e.fits and not e.vae_tiled
    assert model.estimate_memory("generate", w, h, 1, 7.5, "RGB") == e  # the defaults spelled out


def test_estimate_memory_grows_with_the_call(model: diffuse.Model) -> None:
    small = model.estimate_memory(width=32, height=32, guidance_scale=1.0)
    big = model.estimate_memory(width=128, height=128, guidance_scale=1.0)
    assert big.context_host_bytes > small.context_host_bytes and big.host_bytes > small.host_bytes
    four = model.estimate_memory(width=64, height=64, n_images=4, format="RGBA")
    assert four.output_bytes == 4 * 64 * 64 * 4
    for e in (small, big, four):
        assert e.host_bytes == _parts_sum(e)
    edit = model.estimate_memory("edit", 64, 48)
    variation = model.estimate_memory(diffuse.Operation.VARIATION, 64, 48)
    for e in (edit, variation):
        assert e.host_bytes == _parts_sum(e) and e.output_bytes == 64 * 48 * 3 and e.fits


def test_estimate_memory_budget(model: diffuse.Model) -> None:
    unlimited = model.estimate_memory(width=64, height=64)
    tight = model.estimate_memory(width=64, height=64, memory_budget=MiB)
    # a 1 MiB arena cannot hold this call even with a tiled VAE
    assert not tight.fits
    assert tight.host_bytes == _parts_sum(tight)
    roomy = model.estimate_memory(width=64, height=64, memory_budget=unlimited.context_host_bytes * 2)
    assert roomy.fits and roomy.context_host_bytes <= unlimited.context_host_bytes * 2


def test_estimate_memory_cuda(model: diffuse.Model) -> None:
    """Since 0.4: device "cuda" is estimated without a GPU: the arena moves
    to the device, beside the weights' device copy."""
    cpu = model.estimate_memory(width=64, height=64)
    gpu = model.estimate_memory(width=64, height=64, device="cuda")
    assert gpu.context_host_bytes == 0 and gpu.device_bytes > cpu.context_host_bytes
    assert gpu.host_bytes == cpu.host_bytes - cpu.context_host_bytes == _parts_sum(gpu)
    assert gpu.fits
    assert not model.estimate_memory(width=64, height=64, device="cuda", memory_budget=MiB).fits


def test_context_memory(model: diffuse.Model) -> None:
    """Since 0.4: Context.memory (diffuse_ctx_get_memory)."""
    seen: List[Any] = []
    holder: List[diffuse.Context] = []

    def probe(p: Progress) -> None:
        if not seen:
            try:
                holder[0].memory
            except diffuse.BusyError as e:
                seen.append(e)

    with diffuse.Context(model, device="cpu", threads=1, progress=probe, memory_budget=512 * MiB) as c:
        holder.append(c)
        c.generate("a red circle", return_numpy=True, **dict(FAST, size=(64, 64)))
        m = c.memory
        assert isinstance(m, diffuse.ContextMemory)
        assert m.device == diffuse.Device.CPU and m.memory_budget == 512 * MiB
        assert m.device_bytes == 0 and m.device_peak_bytes == 0
        # exactly the arena the estimate plans for the same call
        planned = model.estimate_memory(
            width=64, height=64, guidance_scale=FAST["guidance"], memory_budget=512 * MiB
        ).context_host_bytes
        assert m.host_bytes == planned, (planned, m.host_bytes)
    assert len(seen) == 1, "reading memory from the context's own callback must raise BusyError"
    with pytest.raises(diffuse.ClosedError):
        c.memory


def test_estimate_memory_errors(model: diffuse.Model, model_path: str) -> None:
    with pytest.raises(diffuse.InvalidArgumentError):
        model.estimate_memory(width=33, height=64)  # not a multiple of the VAE scale factor
    with pytest.raises(diffuse.InvalidArgumentError):
        model.estimate_memory(n_images=17)
    with pytest.raises(diffuse.InvalidArgumentError):
        model.estimate_memory(n_images=0)
    with pytest.raises(ValueError, match="operation"):
        model.estimate_memory("upscale")
    with pytest.raises(ValueError, match="pixel format"):
        model.estimate_memory(format="CMYK")
    m = diffuse.Model(model_path)
    m.close()
    with pytest.raises(diffuse.ClosedError):
        m.estimate_memory()


# -- devices -------------------------------------------------------------------------


def test_list_devices(model: diffuse.Model) -> None:
    devices = diffuse.list_devices()
    assert devices and all(isinstance(d, diffuse.DeviceInfo) for d in devices)
    cpu = devices[0]
    assert cpu.device == diffuse.Device.CPU and cpu.index == 0 and cpu.available
    assert cpu.name and cpu.memory_bytes > 64 * MiB and cpu.threads >= 1
    cuda = [d for d in devices if d.device == diffuse.Device.CUDA]
    assert cuda, "no CUDA entry (the library lists one even without a GPU)"
    if any(d.available for d in cuda):
        pytest.skip("a usable GPU is present; the unavailable-CUDA checks do not apply")
    assert len(cuda) == 1 and cuda[0].note, cuda  # says why
    # and the library agrees when a context asks for it
    with pytest.raises(diffuse.DeviceError):
        diffuse.Context(model, device="cuda")


def test_context_device(model: diffuse.Model) -> None:
    with diffuse.Context(model, device="cpu", threads=1) as c:
        requested, info = c.device
        assert requested == diffuse.Device.CPU
        assert info.device == diffuse.Device.CPU and info.available and info.threads == 1
        assert info.name == diffuse.list_devices()[0].name
    with pytest.raises(diffuse.ClosedError):
        c.device
    gpu = any(d.available for d in diffuse.list_devices() if d.device == diffuse.Device.CUDA)
    with diffuse.Context(model, device="auto") as c:
        assert c.device.requested == diffuse.Device.AUTO
        assert c.device.info.device == (diffuse.Device.CUDA if gpu else diffuse.Device.CPU)


# -- previews decoded with the VAE ---------------------------------------------------------


def test_set_preview_decode(ctx: diffuse.Context, model: diffuse.Model) -> None:
    scale = model.info["vae_scale_factor"]
    got: List[Tuple[int, Tuple[int, ...]]] = []
    ctx.set_preview(lambda im, p: got.append((p.step, im.shape)), every=1, return_numpy=True)
    try:
        ctx.set_preview_decode(2)
        (final,) = ctx.generate("a red circle", return_numpy=True, **dict(FAST, steps=5, size=(64, 64)))
        decoded = [s for s, shape in got if shape == final.shape]
        small = [s for s, shape in got if shape == (64 // scale, 64 // scale, 3)]
        # steps 2 and 4 and the last are full VAE decodes, the others projections
        assert decoded == [2, 4, 5] and small == [1, 3], got

        got.clear()
        ctx.set_preview_decode(0)  # off again
        ctx.generate("a red circle", **dict(FAST, steps=3, size=(64, 64)))
        assert [shape for _, shape in got] == [(64 // scale, 64 // scale, 3)] * 3, got
    finally:
        ctx.set_preview_decode(0)
        ctx.set_preview(None)
    with pytest.raises(ValueError):
        ctx.set_preview_decode(-1)


def test_set_preview_decode_refused_while_a_job_runs(ctx: diffuse.Context) -> None:
    running, release = threading.Event(), threading.Event()

    def hold(p: Progress) -> None:
        if p.stage == Stage.DENOISE:
            running.set()
            release.wait(10)

    ctx.progress = hold
    with ctx.start_generate("x", **FAST) as job:
        try:
            assert running.wait(10)
            with pytest.raises(diffuse.BusyError):
                ctx.set_preview_decode(1)
        finally:
            release.set()
        job.result()
    ctx.progress = None
    ctx.set_preview_decode(1)  # free again
    ctx.close()
    with pytest.raises(diffuse.ClosedError):
        ctx.set_preview_decode(1)


# -- progress while loading ------------------------------------------------------------


def test_load_progress_is_reported(model_path: str) -> None:
    seen: List[Progress] = []
    with diffuse.Model(model_path, progress=seen.append) as m:
        assert m.info["family"] == "sd1"
    assert seen and all(isinstance(p, Progress) and p.stage == Stage.LOAD for p in seen)
    total = seen[-1].total
    assert total >= 3  # weight files and the network setup
    assert all(p.total == total for p in seen)
    steps = [p.step for p in seen]
    assert steps == sorted(steps) and steps[-1] == total
    elapsed = [p.elapsed for p in seen]
    assert elapsed == sorted(elapsed)


def test_load_progress_returning_true_cancels(model_path: str) -> None:
    calls: List[Progress] = []

    def stop(p: Progress) -> bool:
        calls.append(p)
        return p.step >= 1

    with pytest.raises(diffuse.CancelledError) as err:
        diffuse.Model(model_path, progress=stop)
    assert err.value.status == diffuse.Status.CANCELLED
    assert calls[-1].step == 1 and calls[-1].step < calls[-1].total  # stopped at once
    # nothing half-loaded: a new load works
    with diffuse.Model(model_path) as m:
        assert m.info["family"] == "sd1"


def test_load_progress_exception_cancels_and_is_reraised(model_path: str) -> None:
    class Boom(Exception):
        pass

    calls: List[Any] = []

    def explode(p: Progress) -> None:
        calls.append(p)
        raise Boom("from the load progress")

    with pytest.raises(Boom, match="from the load progress") as err:
        diffuse.Model(model_path, progress=explode)
    assert any(f.name == "explode" for f in err.traceback)
    assert len(calls) == 1  # the load stopped at the first report
    with pytest.raises(TypeError):
        diffuse.Model(model_path, progress="not callable")  # type: ignore[arg-type]
