#!/usr/bin/env python3
"""Reference images for seamless tiling (diffuse_generate_params tile_x /
tile_y): diffusers' StableDiffusionPipeline on tests/fixtures/models/tiny-sd1
with every padded Conv2d of the UNet and the VAE switched to circular padding
along the tiled axes -- torch's padding_mode="circular" when both axes tile
(the usual "seamless" recipe), and for one axis an explicit F.pad that wraps
that axis and zero-pads the other. Convolutions without padding (1x1, and the
VAE encoder's downsample, which pads with F.pad itself) are unchanged.

Writes tests/fixtures/pipeline/gen_seamless_*.bin in the format of
make_pipeline_fixtures.py (header line, JSON case line, uint8 NHWC images).
Run with the reference venv: .venv-ref/bin/python scripts/make_seamless_fixtures.py
"""
import os
import sys

import torch
import torch.nn.functional as F
import diffusers
from diffusers import StableDiffusionPipeline

sys.path.insert(0, os.path.dirname(__file__))
import make_pipeline_fixtures as mpf  # noqa: E402

CASES = [
    dict(name="gen_seamless_xy", prompt="a red circle and a blue square", negative_prompt="", n=1, width=64,
         height=48, steps=4, guidance=7.5, guidance_rescale=0.0, sampler="default", seed=77, tile_x=1, tile_y=1),
    dict(name="gen_seamless_x", prompt="a green star on the left", negative_prompt="", n=1, width=48, height=64,
         steps=4, guidance=5.0, guidance_rescale=0.0, sampler="euler", seed=78, tile_x=1, tile_y=0),
]


def make_seamless(module, tile_x, tile_y):
    """Switches every padded Conv2d under @module to wrap along the tiled axes."""
    for m in module.modules():
        if not isinstance(m, torch.nn.Conv2d) or m.padding == (0, 0):
            continue
        ph, pw = m.padding
        if tile_x and tile_y:
            m.padding_mode = "circular"
            continue

        def forward(x, m=m, ph=ph, pw=pw):
            x = F.pad(x, (pw, pw, 0, 0), mode="circular" if tile_x else "constant")
            x = F.pad(x, (0, 0, ph, ph), mode="circular" if tile_y else "constant")
            return F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)

        m.forward = forward


def main():
    versions = dict(torch=torch.__version__, diffusers=diffusers.__version__)
    for case in CASES:
        pipe = StableDiffusionPipeline.from_pretrained(mpf.MODEL, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        make_seamless(pipe.unet, case["tile_x"], case["tile_y"])
        make_seamless(pipe.vae, case["tile_x"], case["tile_y"])
        mpf.set_sampler(pipe, case["sampler"])
        out = pipe(case["prompt"], negative_prompt=case["negative_prompt"] or None, num_images_per_prompt=case["n"],
                   width=case["width"], height=case["height"], num_inference_steps=case["steps"],
                   guidance_scale=case["guidance"], guidance_rescale=case["guidance_rescale"],
                   generator=mpf.generators(case["seed"], case["n"]), output_type="np").images
        mpf.write(dict(case, call="generate", versions=versions), [mpf.to_u8(out)])


if __name__ == "__main__":
    main()
