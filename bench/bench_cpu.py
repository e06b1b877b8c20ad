"""bench_cpu.py - libdiffuse's CPU backend against diffusers on torch CPU, in
one run, on the same SD1.5-shaped model with random weights (timing does not
need trained weights).

It saves a StableDiffusionPipeline with SD 1.5's shapes (UNet 320/640/1280,
CLIP ViT-L text tower, SD VAE; the real CLIP vocabulary from
tests/fixtures/tokenizer/clip-sd1) to a temp folder in float32, then runs the
same text-to-image call (same prompt, seed, sampler, size, steps, guidance)
in two child processes — diffusers (float32, torch threads = cores) and
libdiffuse through its Python binding — and reports seconds per denoising
step, whole-image seconds and each process's peak RSS.

Run: .venv-ref/bin/python bench/bench_cpu.py --lib build/libdiffuse.so.0 [--size 512] [--steps 4]
     .venv-ref/bin/python bench/bench_cpu.py --preview --size 256 --steps 4   # preview overhead
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD_DIFFUSERS = r"""
import json, sys, time, torch
from diffusers import StableDiffusionPipeline
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
pipe = StableDiffusionPipeline.from_pretrained(a["model"], safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
stamps = []
def on_step(p, i, t, kw):
    stamps.append(time.perf_counter()); return kw
t0 = time.perf_counter()
pipe(a["prompt"], num_inference_steps=a["steps"], height=a["size"], width=a["size"], guidance_scale=7.5,
     generator=torch.Generator("cpu").manual_seed(42), callback_on_step_end=on_step, output_type="np")
t1 = time.perf_counter()
print(json.dumps({"total": t1 - t0, "stamps": [s - t0 for s in stamps]}))
"""

CHILD_LIBDIFFUSE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
import diffuse
a = json.loads(sys.argv[1])
stamps = []
def on_progress(p):
    if p.stage == diffuse.Stage.DENOISE: stamps.append(time.perf_counter())
with diffuse.Model(a["model"]) as m, diffuse.Context(m, threads=a["threads"], progress=on_progress) as ctx:
    t0 = time.perf_counter()
    ctx.generate(a["prompt"], steps=a["steps"], size=(a["size"], a["size"]), guidance=7.5, seed=42)
    t1 = time.perf_counter()
print(json.dumps({"total": t1 - t0, "stamps": [s - t0 for s in stamps]}))
"""

# --preview: the cost of the cheap preview (diffuse_ctx_set_preview: the
# latent -> RGB projection at every step, delivered to a callback). Measured
# directly: each report's elapsed_seconds is taken when the library enters
# its progress step, before it projects; the host's clock when the preview
# callback is entered, minus that moment, is what the preview cost (the
# projection, its buffer, the binding turning it into a numpy array). The
# two clocks are CLOCK_MONOTONIC; their offset comes from the first
# progress report of each call. Also timed: seconds per step of whole calls
# with and without previews (rounds alternate the order; the first call,
# with previews so the projection is fitted, is a warm-up) - on a shared VM
# those differ by more than the preview costs, so they bound nothing.
CHILD_PREVIEW = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[2])
import diffuse
a = json.loads(sys.argv[1])
stamps, in_cb, offset = [], [], []
def on_progress(p):
    if not offset: offset.append(time.perf_counter() - p.elapsed)
    if p.stage == diffuse.Stage.DENOISE: stamps.append(time.perf_counter())
def on_preview(im, p):
    in_cb.append(time.perf_counter() - (offset[0] + p.elapsed))
def run(ctx, preview, steps):
    ctx.set_preview(on_preview if preview else None, every=1, return_numpy=True)
    del stamps[:], offset[:]
    ctx.generate(a["prompt"], steps=steps, size=(a["size"], a["size"]), guidance=7.5, seed=42)
    return [b - a_ for a_, b in zip(stamps, stamps[1:])]   # intervals between DENOISE reports
per = {"off": [], "on": []}
with diffuse.Model(a["model"]) as m, diffuse.Context(m, threads=a["threads"], progress=on_progress) as ctx:
    run(ctx, True, 2)
    del in_cb[:]
    for r in range(a["rounds"]):
        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
            per[mode] += run(ctx, mode == "on", a["steps"] + 1)
off, on = statistics.median(per["off"]), statistics.median(per["on"])
print(json.dumps({"s_per_step_off": off, "s_per_step_on": on, "ab_difference": on / off - 1.0,
                  "steps_each": len(per["on"]), "previews": len(in_cb),
                  "preview_s_median": statistics.median(in_cb), "preview_s_max": max(in_cb),
                  "overhead": statistics.median(in_cb) / off, "overhead_max": max(in_cb) / off}))
"""


def make_model(path):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280))  # the SD 1.5 layout
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                      num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
                                      hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                                      pad_token_id=49407))
    tok = CLIPTokenizer.from_pretrained(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "clip-sd1"))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                          skip_prk_steps=True, steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(path)


def run_child(code, args, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args), os.path.join(ROOT, "bindings", "python", "src")],
                         env=env, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # max over children so far
    res["ru_before_mib"] = before / 1024
    return res


def summarize(name, r, steps):
    st = r["stamps"]
    per_step = (st[-1] - st[0]) / (len(st) - 1) if len(st) > 1 else float("nan")
    return dict(name=name, total_s=round(r["total"], 2), s_per_step=round(per_step, 3),
                peak_rss_mib=round(r["peak_rss_mib"]), evals=len(st))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "libdiffuse.so.0"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--preview", action="store_true",
                    help="measure the cheap preview's cost per step (libdiffuse only) instead")
    ap.add_argument("--rounds", type=int, default=3, help="--preview: rounds of (off, on) calls")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "sd15-shaped")
        t = time.perf_counter()
        make_model(model)
        print(f"model written in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        args = dict(model=model, prompt="a small red circle on the left on a yellow background", steps=a.steps,
                    size=a.size, threads=a.threads)
        env = dict(os.environ, DIFFUSE_LIBRARY=os.path.abspath(a.lib), OMP_WAIT_POLICY="passive")
        if a.preview:
            r = run_child(CHILD_PREVIEW, dict(args, rounds=a.rounds), env)
            result = dict(size=a.size, steps=a.steps, rounds=a.rounds, threads=a.threads, cpu=os.cpu_count(),
                          previews=r["previews"], preview_s_median=round(r["preview_s_median"], 7),
                          preview_s_max=round(r["preview_s_max"], 7),
                          overhead_percent=round(100 * r["overhead"], 4),
                          overhead_percent_worst=round(100 * r["overhead_max"], 4),
                          s_per_step_without=round(r["s_per_step_off"], 4),
                          s_per_step_with=round(r["s_per_step_on"], 4),
                          ab_difference_percent=round(100 * r["ab_difference"], 2), steps_timed_each=r["steps_each"])
            print(json.dumps(result, indent=1))
            if a.out:
                with open(a.out, "w") as f:
                    json.dump(result, f, indent=1)
            return
        # libdiffuse first: RUSAGE_CHILDREN keeps the maximum, so the second
        # child's peak is only known when it is the larger one.
        lib = run_child(CHILD_LIBDIFFUSE, args, env)
        ref = run_child(CHILD_DIFFUSERS, args, env)
    rows = [summarize("libdiffuse CPU", lib, a.steps), summarize("diffusers torch CPU fp32", ref, a.steps)]
    rows[1]["peak_rss_note"] = "max of both children" if ref["peak_rss_mib"] == lib["peak_rss_mib"] else ""
    result = dict(size=a.size, steps=a.steps, threads=a.threads, cpu=os.cpu_count(), rows=rows,
                  speedup_per_step=round(rows[1]["s_per_step"] / rows[0]["s_per_step"], 2),
                  speedup_total=round(rows[1]["total_s"] / rows[0]["total_s"], 2))
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
