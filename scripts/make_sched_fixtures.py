#!/usr/bin/env python3
"""make_sched_fixtures.py - writes tests/fixtures/sched/{rng,sched,guidance}.bin,
the reference data that tests/test_rng.c and tests/test_sched.c replay.

The reference is torch's CPU generator and diffusers' schedulers on float32
tensors (pinned versions, recorded in every file). Each scheduler case runs
set_timesteps, scales the model input, and steps with a seeded stand-in
"model output" at every evaluation, exactly as StableDiffusionPipeline does;
the inputs and every intermediate sample are saved so the C code can replay
the same model outputs and compare each step.

File format (little-endian): the line "DFFIX 1\\n", a decimal byte count and
"\\n", that many bytes of JSON (padded with spaces so the payload starts at a
multiple of 8), then the payload. The JSON holds "meta" (versions, cases)
and "arrays": name -> {"dtype": "f4"|"f8"|"i8", "shape": [...], "offset": N}
with offsets relative to the payload start (multiples of 8).

Usage: .venv-ref/bin/python scripts/make_sched_fixtures.py  (needs scipy in
the venv: pip install scipy==1.17.1; deterministic:
running it twice gives identical files). A child process with
ATEN_CPU_CAPABILITY=default records torch's non-SIMD normal sampling.
"""
import inspect
import json
import os
import platform
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "sched")
# scipy integrates LMS's coefficients; scripts/ref-venv.sh must install it too.
PINNED = {"torch": "2.15.0", "diffusers": "0.42.1", "scipy": "1.17."}


class Fixture:
    """Arrays plus metadata, written in the DFFIX 1 format."""

    def __init__(self):
        self.arrays = {}
        self.payload = bytearray()
        self.meta = {}

    def add(self, name, arr):
        assert name not in self.arrays, name
        arr = np.asarray(arr)
        code = {np.dtype(np.float32): "f4", np.dtype(np.float64): "f8", np.dtype(np.int64): "i8"}[arr.dtype]
        arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<")))
        while len(self.payload) % 8:
            self.payload.append(0)
        self.arrays[name] = {"dtype": code, "shape": list(arr.shape), "offset": len(self.payload)}
        self.payload += arr.tobytes()
        return name

    def save(self, path):
        text = json.dumps({"meta": self.meta, "arrays": self.arrays}, sort_keys=True, allow_nan=True)
        head = b"DFFIX 1\n"
        body = text.encode()
        while True:
            count = f"{len(body)}\n".encode()
            if (len(head) + len(count) + len(body)) % 8 == 0:
                break
            body += b" "
        with open(path, "wb") as f:
            f.write(head + count + body + bytes(self.payload))
        print(f"wrote {path}: {os.path.getsize(path)} bytes")


def versions():
    import diffusers
    import scipy

    v = {"torch": torch.__version__, "diffusers": diffusers.__version__, "scipy": scipy.__version__,
         "numpy": np.__version__, "python": platform.python_version(),
         "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for k, want in PINNED.items():
        if want and not v[k].startswith(want):
            sys.exit(f"{k} {v[k]} is not the pinned {want}: run scripts/ref-venv.sh")
    return v


# --------------------------------------------------------------------------
# RNG
# --------------------------------------------------------------------------

RNG_SEEDS = [0, 1, 42, 12345, 4294967295, 4294967296 + 5, 2**63 + 17]
RNG_SIZES = list(range(1, 18)) + [31, 32, 33, 100]
RNG_SEQ = [3, 20, 1, 16, 5, 2, 17, 4096, 3, 256, 1]


def rng_cases(fx, prefix):
    """Fresh draws per (seed, size), a long tensor, and consecutive draws."""
    cases = []
    for seed in RNG_SEEDS:
        for n in RNG_SIZES:
            g = torch.Generator("cpu").manual_seed(seed)
            name = fx.add(f"{prefix}randn_{seed}_{n}", torch.randn(n, generator=g).numpy())
            cases.append({"kind": "randn", "seed": str(seed), "sizes": [n], "array": name})
    for seed in [42, 1234]:
        g = torch.Generator("cpu").manual_seed(seed)
        name = fx.add(f"{prefix}randn_big_{seed}", torch.randn(1, 4, 64, 64, generator=g).numpy().ravel())
        cases.append({"kind": "randn", "seed": str(seed), "sizes": [4 * 64 * 64], "array": name})
    g = torch.Generator("cpu").manual_seed(7)
    seq = np.concatenate([torch.randn(n, generator=g).numpy() for n in RNG_SEQ])
    cases.append({"kind": "randn", "seed": "7", "sizes": RNG_SEQ, "array": fx.add(f"{prefix}randn_seq", seq)})
    g = torch.Generator("cpu").manual_seed(3)
    mix = [("rand", 5), ("rand", 40), ("randn", 7), ("rand", 3), ("randn", 1), ("randn", 18)]
    vals = [(torch.rand if k == "rand" else torch.randn)(n, generator=g).numpy() for k, n in mix]
    cases.append({"kind": "mixed", "seed": "3", "sizes": [n for _, n in mix], "ops": [k for k, _ in mix],
                  "array": fx.add(f"{prefix}mixed", np.concatenate(vals))})
    return cases


def rng_default_child(path):
    """Runs in a child with ATEN_CPU_CAPABILITY=default: non-SIMD randn."""
    fx = Fixture()
    cases = []
    for seed in [0, 42]:
        for n in [16, 17, 33, 1000]:
            g = torch.Generator("cpu").manual_seed(seed)
            name = fx.add(f"libm_randn_{seed}_{n}", torch.randn(n, generator=g).numpy())
            cases.append({"kind": "randn", "seed": str(seed), "sizes": [n], "array": name})
    fx.meta = {"cases": cases, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    fx.save(path)


def make_rng(ver):
    fx = Fixture()
    simd = rng_cases(fx, "")
    tmp = os.path.join(OUT, ".rng_libm.tmp")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--rng-default-child", tmp], env=env, check=True)
    with open(tmp, "rb") as f:
        data = f.read()
    os.remove(tmp)
    n = int(data.split(b"\n")[1])
    start = data.index(b"\n", 8) + 1
    child = json.loads(data[start:start + n])
    payload = data[start + n:]
    libm = []
    for c in child["meta"]["cases"]:
        a = child["arrays"][c["array"]]
        arr = np.frombuffer(payload, dtype="<f4", count=int(np.prod(a["shape"])), offset=a["offset"])
        libm.append(dict(c, array=fx.add(c["array"], arr.copy())))
    fx.meta = {"versions": ver, "simd": {"capability": ver["cpu_capability"], "cases": simd},
               "libm": {"capability": child["meta"]["cpu_capability"], "cases": libm}}
    fx.save(os.path.join(OUT, "rng.bin"))


# --------------------------------------------------------------------------
# Schedulers
# --------------------------------------------------------------------------

SD15 = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
        "clip_sample": False}
SD21V = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
         "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
         "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
         "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}

# The public enum diffuse_sampler -> (diffusers class, config overrides).
SAMPLERS = {
    1: ("DDIMScheduler", {}),
    2: ("DDPMScheduler", {}),
    3: ("PNDMScheduler", {"skip_prk_steps": True}),
    4: ("LMSDiscreteScheduler", {}),
    5: ("EulerDiscreteScheduler", {}),
    6: ("EulerAncestralDiscreteScheduler", {}),
    7: ("HeunDiscreteScheduler", {}),
    8: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                         "use_karras_sigmas": False}),
    9: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                         "use_karras_sigmas": True}),
    10: ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    11: ("UniPCMultistepScheduler", {}),
}
SHAPE = (1, 4, 3, 3)


def make_scheduler(cfg, sampler):
    import diffusers

    if sampler == 0:
        return getattr(diffusers, cfg["_class_name"]).from_config(cfg)
    cls, over = SAMPLERS[sampler]
    return getattr(diffusers, cls).from_config(cfg, **over)


def config_id(fx, cfg):
    """Index of @cfg (as JSON text, the way diffusers writes it) in the
    file's table of configs; cases share configs."""
    text = json.dumps(cfg, allow_nan=True, sort_keys=True)
    table = fx.meta.setdefault("configs", [])
    if text not in table:
        table.append(text)
    return table.index(text)


def run_case(fx, name, cfg, sampler, steps, seed, eta=0.0, strength=None, batch=1):
    """One trajectory; returns the case record. Model outputs come from a
    seeded generator (a stand-in for the UNet); ancestral noise comes from
    per-image generators seeded seed+1000+k, as a pipeline passes them."""
    sch = make_scheduler(cfg, sampler)
    sch.set_timesteps(steps)
    ts = sch.timesteps.clone()
    shape = (batch,) + SHAPE[1:]
    g_model = torch.Generator("cpu").manual_seed(seed)
    gens = [torch.Generator("cpu").manual_seed(seed + 1000 + k) for k in range(batch)]
    params = inspect.signature(sch.step).parameters
    kw = {}
    if "generator" in params:
        kw["generator"] = gens if batch > 1 else gens[0]
    if "eta" in params:
        kw["eta"] = eta
    rec = {"name": name, "config": config_id(fx, cfg), "sampler": sampler, "steps": steps,
           "eta": eta, "batch": batch, "seed": seed, "numel": int(np.prod(shape)),
           "class": type(sch).__name__, "init_noise_sigma": float(sch.init_noise_sigma),
           "order": int(sch.order)}
    fx.add(name + ".timesteps", ts.numpy().astype(np.float64))
    if getattr(sch, "sigmas", None) is not None and len(sch.sigmas) <= len(ts) + 2:  # the inference sigmas
        fx.add(name + ".sigmas", sch.sigmas.numpy().astype(np.float32))
        rec["has_sigmas"] = True
    x = torch.randn(shape, generator=g_model)
    fx.add(name + ".x", x.numpy())
    start = 0
    if strength is None:
        sample = x * sch.init_noise_sigma
    else:
        init_t = min(int(steps * strength), steps)
        t_start = max(steps - init_t, 0)
        start = t_start * sch.order
        if hasattr(sch, "set_begin_index"):
            sch.set_begin_index(start)
        noise = torch.randn(shape, generator=g_model)
        sample = sch.add_noise(x, noise, ts[start:start + 1].repeat(batch))
        fx.add(name + ".noise", noise.numpy())
        rec["strength"] = strength
    rec["start"] = start
    fx.add(name + ".sample0", sample.numpy())
    mos, ins, outs, identity = [], [], [], True
    for i in range(start, len(ts)):
        t = ts[i]
        inp = sch.scale_model_input(sample, t)
        identity = identity and torch.equal(inp, sample)
        mo = torch.randn(shape, generator=g_model)
        sample = sch.step(mo, t, sample, **kw).prev_sample
        ins.append(inp.numpy().copy())
        mos.append(mo.numpy().copy())
        outs.append(sample.numpy().copy())
    rec["evals"] = len(outs)
    rec["scale_identity"] = identity
    if outs:
        fx.add(name + ".model_out", np.stack(mos))
        fx.add(name + ".out", np.stack(outs))
        if not identity:
            fx.add(name + ".scaled_in", np.stack(ins))
    return rec


def add_noise_checks(fx, cfg, sampler, steps, seed, name):
    """add_noise at every index k, as img2img (k = start) and the legacy
    inpainting blend (k = i + 1) call it."""
    sch = make_scheduler(cfg, sampler)
    sch.set_timesteps(steps)
    ts = sch.timesteps
    g = torch.Generator("cpu").manual_seed(seed)
    x0 = torch.randn(SHAPE, generator=g)
    noise = torch.randn(SHAPE, generator=g)
    outs = []
    for k in range(len(ts)):
        s = make_scheduler(cfg, sampler)
        s.set_timesteps(steps)
        if hasattr(s, "set_begin_index"):
            s.set_begin_index(k)
        outs.append(s.add_noise(x0, noise, ts[k:k + 1]).numpy())
    fx.add(name + ".x0", x0.numpy())
    fx.add(name + ".noise", noise.numpy())
    fx.add(name + ".noisy", np.stack(outs))
    return {"name": name, "config": config_id(fx, cfg), "sampler": sampler, "steps": steps,
            "numel": int(np.prod(SHAPE)), "count": len(ts)}


def fx_last(fx, name):
    a = fx.arrays[name + ".out"]
    n = int(np.prod(a["shape"]))
    return np.frombuffer(bytes(fx.payload), dtype="<f4", count=n, offset=a["offset"])


def sched_cases(fx):
    cases, noise_cases = [], []
    seed = 100

    def add(name, cfg, sampler, steps, **kw):
        nonlocal seed
        seed += 1
        cases.append(run_case(fx, name, cfg, sampler, steps, seed, **kw))
        assert np.isfinite(fx_last(fx, name)).all(), name

    # every sampler x prediction type x spacing x step count
    for sampler in SAMPLERS:
        for pname, base in (("eps", SD15), ("v", SD21V)):
            for spacing in ("leading", "linspace", "trailing"):
                cfg = dict(base, timestep_spacing=spacing)
                for steps in ((1, 4, 10, 25) if spacing == "linspace" else (1, 4, 10) if pname == "eps" else (4, 10)):
                    add(f"s{sampler}_{pname}_{spacing}_{steps}", cfg, sampler, steps)
    # other beta schedules and the model's own scheduler (sampler 0)
    lin = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
           "beta_start": 0.0001, "beta_end": 0.02, "clip_sample": False}
    cos = dict(lin, beta_schedule="squaredcos_cap_v2")
    for sampler in SAMPLERS:
        add(f"s{sampler}_linear_10", lin, sampler, 10)
        if sampler != 9:  # Karras timesteps of a cosine schedule are not rounded: diffusers
            add(f"s{sampler}_cos_10", cos, sampler, 10)  # truncates them into duplicates and fails
    add("default_sd15_20", SD15, 0, 20)
    add("default_sd21_20", SD21V, 0, 20)
    dpm = {"_class_name": "DPMSolverMultistepScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "beta_start": 0.00085, "num_train_timesteps": 1000, "steps_offset": 1, "trained_betas": None,
           "algorithm_type": "dpmsolver++", "solver_order": 2, "lambda_min_clipped": float("-inf"),
           "final_sigmas_type": "zero", "use_karras_sigmas": False, "timestep_spacing": "linspace"}
    add("dpm_order3_10", dict(dpm, solver_order=3), 0, 10)
    add("dpm_order3_20", dict(dpm, solver_order=3), 0, 20)
    add("dpm_heun_12", dict(dpm, solver_type="heun"), 0, 12)
    add("dpm_sigmamin_10", dict(dpm, final_sigmas_type="sigma_min"), 0, 10)
    add("dpm_sigmamin_karras_16", dict(dpm, final_sigmas_type="sigma_min", use_karras_sigmas=True), 0, 16)
    add("dpm_clipped_trailing_8", dict(dpm, lambda_min_clipped=-5.1, timestep_spacing="trailing"), 0, 8)
    add("dpm_clipped_linspace_8", dict(dpm, lambda_min_clipped=-5.1), 0, 8)
    add("dpm_euler_final_16", dict(dpm, euler_at_final=True, lower_order_final=False), 0, 16)
    add("dpm_no_lof_16", dict(dpm, lower_order_final=False, final_sigmas_type="sigma_min"), 0, 16)
    add("dpm_sde_order3_10", dict(dpm, algorithm_type="sde-dpmsolver++", solver_order=3), 0, 10)
    add("dpm_sde_heun_10", dict(dpm, algorithm_type="sde-dpmsolver++", solver_type="heun"), 0, 10)
    add("dpm_sde_batch2_6", SD15, 10, 6, batch=2)
    add("eulera_batch2_5", SD15, 6, 5, batch=2)
    add("ddim_eta_batch2_5", SD15, 1, 5, eta=1.0, batch=2)
    uni = dict(dpm, _class_name="UniPCMultistepScheduler", solver_type="bh2", predict_x0=True)
    del uni["algorithm_type"], uni["lambda_min_clipped"]
    add("unipc_bh1_10", dict(uni, solver_type="bh1", final_sigmas_type="sigma_min"), 0, 10)  # bh1 + zero: NaN
    add("unipc_eps_10", dict(uni, predict_x0=False, final_sigmas_type="sigma_min"), 0, 10)
    add("unipc_order3_12", dict(uni, solver_order=3), 0, 12)
    add("unipc_order3_bh1_v_12", dict(uni, solver_order=3, solver_type="bh1", prediction_type="v_prediction",
                                      final_sigmas_type="sigma_min"), 0, 12)
    add("unipc_disable_10", dict(uni, disable_corrector=[0, 3]), 0, 10)
    add("unipc_karras_10", dict(uni, use_karras_sigmas=True), 0, 10)
    add("unipc_karras_sigmamin_10", dict(uni, use_karras_sigmas=True, final_sigmas_type="sigma_min",
                                         sigma_min=0.1, sigma_max=10.0), 0, 10)
    add("unipc_sigmamin_nolof_10", dict(uni, final_sigmas_type="sigma_min", lower_order_final=False), 0, 10)
    add("unipc_leading_10", dict(uni, timestep_spacing="leading"), 0, 10)
    eul = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "beta_start": 0.00085, "num_train_timesteps": 1000, "steps_offset": 1,
           "timestep_spacing": "leading", "interpolation_type": "linear"}
    add("euler_karras_10", dict(eul, use_karras_sigmas=True), 0, 10)
    add("euler_karras_minmax_10", dict(eul, use_karras_sigmas=True, sigma_min=0.05, sigma_max=12.0), 0, 10)
    add("euler_sigmamin_10", dict(eul, final_sigmas_type="sigma_min"), 0, 10)
    add("heun_karras_8", dict(eul, _class_name="HeunDiscreteScheduler", use_karras_sigmas=True), 0, 8)
    add("heun_sample_clip_6", dict(eul, _class_name="HeunDiscreteScheduler", prediction_type="sample",
                                   clip_sample=True), 0, 6)
    add("lms_karras_10", dict(eul, _class_name="LMSDiscreteScheduler", use_karras_sigmas=True), 0, 10)
    add("lms_sample_8", dict(eul, _class_name="LMSDiscreteScheduler", prediction_type="sample"), 0, 8)
    add("euler_sample_6", dict(eul, prediction_type="sample"), 0, 6)
    zsnr = dict(SD21V, timestep_spacing="trailing", rescale_betas_zero_snr=True)
    for sampler in (1, 2, 5, 6, 8, 11):
        add(f"zsnr_s{sampler}_8", zsnr, sampler, 8)
    add("ddim_eta05_10", SD15, 1, 10, eta=0.5)
    add("ddim_eta1_25", SD21V, 1, 25, eta=1.0)
    add("ddim_sample_clip_8", dict(lin, prediction_type="sample", clip_sample=True, clip_sample_range=0.8), 0, 8)
    add("ddim_alpha1_8", dict(lin, set_alpha_to_one=True, steps_offset=1), 0, 8)
    ddpm = dict(lin, _class_name="DDPMScheduler")
    add("ddpm_clip_8", dict(ddpm, clip_sample=True), 0, 8)
    add("ddpm_smalllog_8", dict(ddpm, variance_type="fixed_small_log"), 0, 8)
    add("ddpm_large_8", dict(ddpm, variance_type="fixed_large"), 0, 8)
    add("ddpm_sample_8", dict(ddpm, prediction_type="sample", clip_sample=True), 0, 8)
    add("ddpm_sigmoid_8", dict(ddpm, beta_schedule="sigmoid"), 0, 8)
    t100 = np.linspace(0.0005, 0.03, 100).tolist()
    small = {"_class_name": "PNDMScheduler", "num_train_timesteps": 100, "trained_betas": t100,
             "skip_prk_steps": True, "steps_offset": 1}
    for sampler in SAMPLERS:
        add(f"trained100_s{sampler}_7", small, sampler, 7)
    add("big_steps_euler_100", SD15, 5, 100)
    add("big_steps_dpm_50", SD15, 8, 50)
    # img2img: start part-way in, with add_noise at the first timestep
    for sampler in SAMPLERS:
        for strength in (0.6, 0.35):
            add(f"i2i_s{sampler}_{int(strength * 100)}_10", SD15, sampler, 10, strength=strength)
        add(f"i2i_v_s{sampler}_75_8", dict(SD21V, timestep_spacing="trailing"), sampler, 8, strength=0.75)
    for sampler in SAMPLERS:
        noise_cases.append(add_noise_checks(fx, SD15, sampler, 6, 900 + sampler, f"noise_s{sampler}"))
    return cases, noise_cases


def make_sched(ver):
    fx = Fixture()
    cases, noise_cases = sched_cases(fx)
    fx.meta.update({"versions": ver, "shape": list(SHAPE), "cases": cases, "add_noise": noise_cases})
    fx.save(os.path.join(OUT, "sched.bin"))


# --------------------------------------------------------------------------
# Guidance
# --------------------------------------------------------------------------

def make_guidance(ver):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    fx = Fixture()
    g = torch.Generator("cpu").manual_seed(5)
    shape = (2, 4, 5, 5)
    unc = torch.randn(shape, generator=g)
    cond = torch.randn(shape, generator=g) * 1.3 + 0.1
    cases = []
    for scale, phi in ((7.5, 0.0), (7.5, 0.7), (3.0, 1.0), (12.0, 0.3)):
        guided = unc + scale * (cond - unc)
        out = rescale_noise_cfg(guided, cond, guidance_rescale=phi) if phi > 0 else guided
        name = f"g_{scale}_{phi}"
        fx.add(name + ".guided", guided.numpy())
        fx.add(name + ".out", out.numpy())
        cases.append({"name": name, "scale": scale, "rescale": phi})
    fx.add("uncond", unc.numpy())
    fx.add("cond", cond.numpy())
    fx.meta = {"versions": ver, "shape": list(shape), "cases": cases}
    fx.save(os.path.join(OUT, "guidance.bin"))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--rng-default-child":
        rng_default_child(sys.argv[2])
        return
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    ver = versions()
    make_rng(ver)
    make_sched(ver)
    make_guidance(ver)


if __name__ == "__main__":
    main()
