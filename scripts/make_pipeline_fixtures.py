"""make_pipeline_fixtures.py - reference images of diffusers' Stable
Diffusion pipelines on the tiny test models (tests/fixtures/models/tiny-sd1
and, for 9-channel inpainting, tiny-sd1-inpaint), for tests/test_pipeline.c.

Each case records the call's settings and the 8-bit images diffusers
returns (output_type="np", then round(x * 255) as its numpy_to_pil does).
Seeds follow libdiffuse's rule: image i uses seed + i, i.e. diffusers gets
a list of generators torch.Generator("cpu").manual_seed(seed + i).

  generate   StableDiffusionPipeline.
  variation  StableDiffusionImg2ImgPipeline on the input image (prompt ""
             = unconditional); the image size is a multiple of the VAE
             scale factor, so diffusers does not resize it.
  edit       StableDiffusionInpaintPipeline (4-channel tiny-sd1: the legacy
             latent-blending path; tiny-sd1-inpaint: 9-channel UNet) with
             height/width = the image size. Its mask is built from the
             recorded mask bytes as libdiffuse reads them ("alpha": the
             image's alpha channel, 0 = edit; "image": a gray mask image,
             >= 128 = edit) and given to diffusers as an "L" image with 255 =
             edit. As libdiffuse does, the pixels the mask keeps are then
             pasted back from the input (mask_feather 0), so the repainted
             pixels are what is compared.

File layout (one file per case): line 1 "DIFFUSE-FIXTURE pipeline 1",
line 2 one JSON object (call, settings, shapes, versions), then, for
"variation"/"edit", the input image (H, W, 3) uint8, for "edit" the mask
bytes (H, W) uint8 (see mask_mode above), then the output images
(n, H, W, 3) uint8.
Run: .venv-ref/bin/python scripts/make_pipeline_fixtures.py
(The sd2_*.bin cases of tests/fixtures/pipeline come from scripts/make_tiny_sd2.py.)
"""
import json
import os

import numpy as np
import PIL.Image
import torch
import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                       StableDiffusionPipeline)

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-sd1")
INPAINT_MODEL = os.path.join(ROOT, "tests", "fixtures", "models", "tiny-sd1-inpaint")
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

# input: the synthetic picture (see make_input); input_format: how the test
# hands it to libdiffuse (the pixels diffusers sees are the same RGB).
VARIATION = [
    dict(name="var_default", prompt="", negative_prompt="", n=1, width=64, height=64, steps=6, guidance=7.5,
         strength=0.7, sampler="default", seed=5, input=1, input_format="rgb"),
    dict(name="var_euler_a_n2", prompt="a blue square", negative_prompt="", n=2, width=48, height=64, steps=6,
         guidance=5.0, strength=0.5, sampler="euler_a", seed=11, input=2, input_format="rgb"),
    dict(name="var_rgba_bottom_left", prompt="", negative_prompt="", n=1, width=64, height=48, steps=5,
         guidance=7.5, strength=0.8, sampler="euler", seed=17, input=3, input_format="rgba_bottom_left"),
]

# mask: the region to repaint (see make_mask); mask_mode as in the docstring;
# input_format: how the test hands over the image ("alpha" masks travel in
# its alpha channel; "image" masks go as a separate RGB8 gray image).
EDIT = [
    dict(name="edit_alpha_s1", model="tiny-sd1", prompt="a red circle", negative_prompt="", n=1, width=64,
         height=64, steps=4, guidance=7.5, strength=1.0, sampler="default", seed=21, input=4, mask=1,
         mask_mode="alpha", input_format="rgba"),
    dict(name="edit_alpha_s075_n2", model="tiny-sd1", prompt="a green tree", negative_prompt="blurry", n=2,
         width=48, height=64, steps=4, guidance=5.0, strength=0.75, sampler="euler_a", seed=23, input=5, mask=2,
         mask_mode="alpha", input_format="bgra_bottom_left"),
    dict(name="edit_inpaint9_n2", model="tiny-sd1-inpaint", prompt="a yellow star", negative_prompt="", n=2,
         width=64, height=48, steps=4, guidance=7.5, strength=1.0, sampler="default", seed=29, input=6, mask=3,
         mask_mode="image", input_format="rgb"),
    dict(name="edit_inpaint9_s06", model="tiny-sd1-inpaint", prompt="a cat", negative_prompt="", n=1, width=48,
         height=48, steps=5, guidance=4.0, strength=0.6, sampler="ddim", seed=31, input=7, mask=4,
         mask_mode="image", input_format="rgb"),
]


def make_input(k, width, height):
    """A deterministic picture: smooth colour waves, a disc and mild noise."""
    rs = np.random.RandomState(1000 + k)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(x / (5 + k) + k), 128 + 90 * np.cos(y / (6 + k)),
                    128 + 90 * np.sin((x + y) / (7 + k))], axis=-1)
    cx, cy, r = rs.uniform(0.3, 0.7) * width, rs.uniform(0.3, 0.7) * height, rs.uniform(0.15, 0.3) * min(width, height)
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rs.uniform(0, 255, size=3)
    img += rs.normal(0, 8, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_mask(k, mode, width, height):
    """The mask bytes libdiffuse is given and the boolean region to repaint.
    "alpha": alpha 0 in a rectangle, nonzero (1..255) elsewhere; "image":
    gray levels 128..255 in an ellipse (edit), 0..127 elsewhere (keep), so
    the threshold at 128 is exercised."""
    rs = np.random.RandomState(2000 + k)
    y, x = np.mgrid[0:height, 0:width]
    if mode == "alpha":
        x0, y0 = rs.randint(2, width // 3), rs.randint(2, height // 3)
        x1, y1 = rs.randint(width // 2, width - 2), rs.randint(height // 2, height - 2)
        edit = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        raw = np.where(edit, 0, rs.randint(1, 256, size=edit.shape))
    else:
        cx, cy = rs.uniform(0.35, 0.65) * width, rs.uniform(0.35, 0.65) * height
        rx, ry = rs.uniform(0.2, 0.35) * width, rs.uniform(0.2, 0.35) * height
        edit = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0
        raw = np.where(edit, rs.randint(128, 256, size=edit.shape), rs.randint(0, 128, size=edit.shape))
    return raw.astype(np.uint8), edit


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


def run_variation(pipe, base_scheduler, versions):
    for case in VARIATION:
        pipe.scheduler = base_scheduler
        set_sampler(pipe, case["sampler"])
        rgb = make_input(case["input"], case["width"], case["height"])
        out = pipe(case["prompt"], image=PIL.Image.fromarray(rgb, "RGB"), strength=case["strength"],
                   negative_prompt=case["negative_prompt"] or None, num_images_per_prompt=case["n"],
                   num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                   generator=generators(case["seed"], case["n"]), output_type="np").images
        write(dict(case, call="variation", versions=versions), [rgb, to_u8(out)])


def run_edit(pipes, versions):
    for case in EDIT:
        pipe, base_scheduler = pipes[case["model"]]
        pipe.scheduler = base_scheduler
        set_sampler(pipe, case["sampler"])
        rgb = make_input(case["input"], case["width"], case["height"])
        raw, edit = make_mask(case["mask"], case["mask_mode"], case["width"], case["height"])
        mask = PIL.Image.fromarray(np.where(edit, 255, 0).astype(np.uint8), "L")
        out = pipe(case["prompt"], image=PIL.Image.fromarray(rgb, "RGB"), mask_image=mask,
                   height=case["height"], width=case["width"], strength=case["strength"],
                   negative_prompt=case["negative_prompt"] or None, num_images_per_prompt=case["n"],
                   num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                   generator=generators(case["seed"], case["n"]), output_type="np").images
        out = to_u8(out)
        out[:, ~edit] = rgb[~edit]  # libdiffuse returns the kept pixels unchanged
        write(dict(case, call="edit", versions=versions), [rgb, raw, out])


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
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    inpaint = StableDiffusionInpaintPipeline(**pipe.components)
    inpaint9 = StableDiffusionInpaintPipeline.from_pretrained(INPAINT_MODEL, safety_checker=None,
                                                              requires_safety_checker=False)
    for p in (img2img, inpaint, inpaint9):
        p.set_progress_bar_config(disable=True)
    run_variation(img2img, base_scheduler, versions)
    run_edit({"tiny-sd1": (inpaint, base_scheduler), "tiny-sd1-inpaint": (inpaint9, inpaint9.scheduler)}, versions)


if __name__ == "__main__":
    main()
