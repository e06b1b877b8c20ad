"""make_tiny_sd2.py - a tiny SD2-style pipeline and its reference images.

Writes tests/fixtures/models/tiny-sd2: the layout choices of Stable
Diffusion 2.x at toy size — UNet with linear projections, per-block head
counts (attention_head_dim [2, 4]) and upcast attention; an OpenCLIP-style
text encoder (gelu); a tokenizer that pads with "!"; DDIM with
v-prediction as SD 2.1 ships it — and diffusers' images for it into
tests/fixtures/pipeline/sd2_*.bin (format: scripts/make_pipeline_fixtures.py).
Run: .venv-ref/bin/python scripts/make_tiny_sd2.py
"""
import os
import sys

import torch
import diffusers
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
import make_pipeline_fixtures as fixtures  # noqa: E402
import make_tiny_models as tiny  # noqa: E402

FOLDER = os.path.join(tiny.OUT, "tiny-sd2")
SEEDS = {"unet": 10, "vae": 11, "text_encoder": 12}

CASES = [
    dict(name="sd2_default", prompt="a green triangle at the bottom", negative_prompt="", n=1, width=64,
         height=64, steps=4, guidance=7.5, guidance_rescale=0.0, sampler="default", seed=5),
    dict(name="sd2_euler_rescale", prompt="a white star!", negative_prompt="blurry!!", n=1, width=48, height=64,
         steps=5, guidance=6.0, guidance_rescale=0.7, sampler="euler", seed=11),
    dict(name="sd2_dpmpp", prompt="two rings, left and right", negative_prompt="", n=2, width=64, height=48,
         steps=6, guidance=4.0, guidance_rescale=0.0, sampler="dpmpp_2m_karras", seed=77),
]


def build():
    tokenizer, vocab = tiny.make_tokenizer(os.path.join(FOLDER, "tokenizer"))
    tokenizer.pad_token = "!"
    torch.manual_seed(SEEDS["text_encoder"])
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["!"],
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=1000, hidden_act="gelu", max_position_embeddings=77)).eval()
    torch.manual_seed(SEEDS["unet"])
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True)
    torch.manual_seed(SEEDS["vae"])
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(vae=vae.to(torch.bfloat16), text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet.to(torch.float16), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(FOLDER, safe_serialization=True)


def main():
    build()
    versions = dict(torch=torch.__version__, diffusers=diffusers.__version__)
    pipe = StableDiffusionPipeline.from_pretrained(FOLDER, safety_checker=None, requires_safety_checker=False,
                                                   torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    base = pipe.scheduler
    for case in CASES:
        pipe.scheduler = base
        fixtures.set_sampler(pipe, case["sampler"])
        out = pipe(case["prompt"], negative_prompt=case["negative_prompt"] or None, num_images_per_prompt=case["n"],
                   width=case["width"], height=case["height"], num_inference_steps=case["steps"],
                   guidance_scale=case["guidance"], guidance_rescale=case["guidance_rescale"],
                   generator=fixtures.generators(case["seed"], case["n"]), output_type="np").images
        fixtures.write(dict(case, call="generate", model="tiny-sd2", versions=versions), [fixtures.to_u8(out)])


if __name__ == "__main__":
    main()
