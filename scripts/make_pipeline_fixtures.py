"""make_pipeline_fixtures.py - reference images of diffusers' Stable
Diffusion pipelines on the tiny test model (tests/fixtures/models/tiny-sd1),
for tests/test_pipeline.c.

Each case records the call's settings and the 8-bit images diffusers
returns (output_type="np", then round(x * 255) as its numpy_to_pil does).
Seeds follow libdiffuse's rule: image i uses seed + i, i.e. diffusers gets
a list of generators torch.Generator("cpu").manual_seed(seed + i).

File layout (one file per case): line 1 "DIFFUSE-FIXTURE pipeline 1",
line 2 one JSON object (call, settings, shapes, versions), then, for
"variation"/"edit", the input image (H, W, 3) uint8 and the mask (H, W)
uint8 (255 = edit) when present, then the output images (n, H, W, 3) uint8.
Run: .venv-ref/bin/python scripts/make_pipeline_fixtures.py
"""
import json
import os

import numpy as np
import torch
import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                       StableDiffusionPipeline)

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-sd1")
OUT = os.path.join(ROOT, "tests", "fixtures", "pipeline")

SAMPLERS = {  # libdiffuse sampler name -> (scheduler class, extra config)
    "default": (None, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                          use_karras_sigmas=True)),
}

GENERATE = [
    dict(name="gen_default", prompt="a red circle on the left", negative_prompt="", n=1, width=64, height=64,
         steps=4, guidance=7.5, guidance_rescale=0.0, sampler="default", seed=42),
    dict(name="gen_euler_a_n2", prompt="two blue squares", negative_prompt="green", n=2, width=48, height=64,
         steps=3, guidance=5.0, guidance_rescale=0.0, sampler="euler_a", seed=7),
    dict(name="gen_ddim_nocfg", prompt="a star", negative_prompt="", n=1, width=64, height=48,
         steps=5, guidance=1.0, guidance_rescale=0.0, sampler="ddim", seed=3),
    dict(name="gen_dpmpp_rescale", prompt="a yellow ring, top right", negative_prompt="", n=1, width=64,
         height=64, steps=6, guidance=7.5, guidance_rescale=0.7, sampler="dpmpp_2m_karras", seed=1234),
    dict(name="gen_euler", prompt="an orange cross", negative_prompt="", n=1, width=64, height=64,
         steps=4, guidance=3.0, guidance_rescale=0.0, sampler="euler", seed=99),
]


def set_sampler(pipe, name):
    cls, extra = SAMPLERS[name]
    if cls is not None:
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)


def generators(seed, n):
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]


def to_u8(images):
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def write(case, arrays):
    path = os.path.join(OUT, case["name"] + ".bin")
    with open(path, "wb") as f:
        f.write(b"DIFFUSE-FIXTURE pipeline 1\n")
        f.write(json.dumps(case).encode() + b"\n")
        for a in arrays:
            f.write(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    os.makedirs(OUT, exist_ok=True)
    versions = dict(torch=torch.__version__, diffusers=diffusers.__version__)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    base_scheduler = pipe.scheduler
    for case in GENERATE:
        pipe.scheduler = base_scheduler
        set_sampler(pipe, case["sampler"])
        out = pipe(case["prompt"], negative_prompt=case["negative_prompt"] or None, num_images_per_prompt=case["n"],
                   width=case["width"], height=case["height"], num_inference_steps=case["steps"],
                   guidance_scale=case["guidance"], guidance_rescale=case["guidance_rescale"],
                   generator=generators(case["seed"], case["n"]), output_type="np").images
        write(dict(case, call="generate", versions=versions), [to_u8(out)])


if __name__ == "__main__":
    main()
