#!/usr/bin/env python3
"""make_single_file.py - fixtures for single-file (original LDM layout)
checkpoints: tiny SD1-style and SD2-style pipelines whose weights are
detweights (scripts/detweights.py, rebuilt bit-for-bit in C by
tests/detweights.h), each described as a diffusers folder and as the
single-file checkpoint the original Stable Diffusion code would have saved.

The single file is written from the folder with the inverse of diffusers'
own conversion (diffusers/loaders/single_file_utils.py:
convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint, convert_open_clip_checkpoint and their
DIFFUSERS_TO_LDM_MAPPING tables) and then checked by the reference, so the
mapping is validated by diffusers, not by libdiffuse:
  1. each diffusers conversion function maps the single file back to exactly
     the folder's tensors (bitwise; the only leftovers are the tensors SD
     checkpoints carry and diffusers drops: CLIP position_ids, OpenCLIP's last
     resblock, text_projection, logit_scale, alphas_cumprod);
  2. StableDiffusionPipeline.from_single_file(file, config=folder,
     local_files_only=True) holds the folder pipeline's weights, and both
     give the same image for the same seed; that image is recorded.

The models are shaped so libdiffuse's inference rules (lib/model/single_file.h)
hold, as they do for real SD 1.x/2.x checkpoints: channels multiples of the 32
GroupNorm groups, text width 128 (head dim 64: 2 heads), SD1 UNet 8 heads,
SD2 UNet (64, 64, 128) channels (head dim 64: 1, 1, 2 heads); three levels, so
an up block with both attention and upsampler (output_blocks.i.2.conv) is
mapped too. (tests/fixtures/models/tiny-sd1 cannot be converted: its 32-wide
text encoder has 4 heads, which no rule can read from the shapes, and its
tokenizer/ is not the CLIP vocabulary a single file gets.)

The weights are not committed: a model with the built-in CLIP vocabulary
needs a 49408-row token embedding, so each file would be megabytes. Instead
tests/fixtures/models/single-file/<name>.json records how to rebuild both
forms (the C test, tests/test_single_file.c, does):
  "folder":  the JSON files of the diffusers folder (model_index.json,
             */config.json, scheduler/scheduler_config.json; no tokenizer/, so
             libdiffuse uses its built-in vocabulary as for the single file)
             and, per weights file, its tensors [key, shape]: F32 values
             detweights.tensor(key, shape).
  "single":  the single file's tensors in order, each {key, dtype, shape} and
             its source: "from": [[component, folder key], ...] (the folder
             tensors' values concatenated along dim 0, then given this shape:
             renames, (C, C) -> (C, C, 1, 1) reshapes, OpenCLIP's fused qkv),
             "detw": name (detweights values of a tensor diffusers drops), or
             "arange": true (I64 0..n-1, CLIP's position_ids).
  "digest":  CRC-32 (zlib) over every single-file tensor's bytes in that order
             (the C writer must reproduce the file the reference checked).
  "generate": the call (prompt, size, steps, guidance, seed, default
             sampler) and "image_hex": diffusers' RGB8 image, round(x * 255).
  "expect":  what libdiffuse must infer from the single file alone (config
             values, scheduler class and prediction type).

Run: nice -n 5 .venv-ref/bin/python scripts/make_single_file.py
"""
import json
import os
import shutil
import sys
import tempfile
import zlib

import numpy as np
import torch

import diffusers
import transformers
from diffusers import (AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from diffusers.loaders import single_file_utils as sfu
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import detweights  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures", "models", "single-file")
TOK = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
FORMAT = "libdiffuse single-file fixture 1"

# The call whose image is compared (image 32 x 32: latents 16 x 16 with the
# 2-level VAE, 4 x 4 at the UNet's third level).
GENERATE = dict(prompt="a photo of a cat on a red sofa", negative_prompt="", width=32, height=32, steps=4,
                guidance=7.5, seed=42, n=1, sampler="default")

# SD 1.5's scheduler_config.json (PNDM) and SD 2.1's (DDIM, v-prediction):
# what libdiffuse assumes for a single file of each family.
SCHED_SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False,
                 prediction_type="epsilon", timestep_spacing="leading")
SCHED_SD2 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False,
                 prediction_type="v_prediction")

MODELS = {
    # SD1: conv 1x1 transformer projections, 8 heads, CLIP (quick_gelu).
    "sd1": dict(family="SD1", linear=False, heads=8, image_size=512, act="quick_gelu",
                block_out=(32, 64, 64), text_layers=2),
    # SD2: linear projections, head dim 64, OpenCLIP layout (gelu, fused qkv,
    # one more resblock than the text encoder uses), v-prediction.
    "sd2": dict(family="SD2", linear=True, heads=None, image_size=768, act="gelu",
                block_out=(64, 64, 128), text_layers=2),
}
TEXT_WIDTH, TEXT_MLP, VOCAB = 128, 256, 49408


# ---------------------------------------------------------------------------
# The tiny pipelines
# ---------------------------------------------------------------------------

def make_components(spec):
    vae_scale = 2  # 2-level VAE
    bo = spec["block_out"]
    heads = spec["heads"] or [c // 64 for c in bo]
    unet = UNet2DConditionModel(
        sample_size=spec["image_size"] // vae_scale, in_channels=4, out_channels=4, block_out_channels=bo,
        layers_per_block=2, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=heads, use_linear_projection=spec["linear"], upcast_attention=spec["linear"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
        sample_size=spec["image_size"], scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=TEXT_MLP, num_attention_heads=TEXT_WIDTH // 64,
        num_hidden_layers=spec["text_layers"], vocab_size=VOCAB, max_position_embeddings=77,
        hidden_act=spec["act"], layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407 if spec["family"] == "SD1" else 0)).eval()
    for m in (unet, vae, text):
        detweights.fill_module(m)
    sched = (PNDMScheduler.from_config(SCHED_SD1) if spec["family"] == "SD1" else DDIMScheduler.from_config(SCHED_SD2))
    return unet, vae, text, sched


def make_tokenizer(family, tmp):
    """The CLIP vocabulary of tests/fixtures/tokenizer/clip-sd1 with the
    family's tokenizer configs (SD 2.x pads with "!")."""
    d = os.path.join(tmp, "tok-" + family)
    os.makedirs(d, exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(TOK, "clip-sd1", f), d)
    cfg = os.path.join(TOK, "clip-sd1" if family == "SD1" else "clip-sd2")
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(cfg, f), d)
    return CLIPTokenizer.from_pretrained(d)


# ---------------------------------------------------------------------------
# Inverse of diffusers' single-file conversion
# ---------------------------------------------------------------------------

RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                 "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_LAYERS = sfu.DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]  # diffusers -> ldm
VAE_LAYERS = sfu.DIFFUSERS_TO_LDM_MAPPING["vae"]
VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_key(key, cfg):
    """diffusers UNet key -> LDM key (inverse of convert_ldm_unet_checkpoint)."""
    if key in UNET_LAYERS:
        return UNET_LAYERS[key]
    L = cfg["layers_per_block"]
    p = key.split(".")
    resnet = lambda rest: RESNET_TO_LDM[rest[0]] + "." + ".".join(rest[1:])  # noqa: E731
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "resnets":
            return f"input_blocks.{1 + b * (L + 1) + int(p[3])}.0." + resnet(p[4:])
        if p[2] == "attentions":
            return f"input_blocks.{1 + b * (L + 1) + int(p[3])}.1." + ".".join(p[4:])
        if p[2] == "downsamplers":
            return f"input_blocks.{1 + b * (L + 1) + L}.0.op." + p[-1]
    if p[0] == "mid_block":
        if p[1] == "resnets":
            return f"middle_block.{2 * int(p[2])}." + resnet(p[3:])
        return "middle_block.1." + ".".join(p[3:])
    if p[0] == "up_blocks":
        b = int(p[1])
        if p[2] == "resnets":
            return f"output_blocks.{b * (L + 1) + int(p[3])}.0." + resnet(p[4:])
        if p[2] == "attentions":
            return f"output_blocks.{b * (L + 1) + int(p[3])}.1." + ".".join(p[4:])
        if p[2] == "upsamplers":
            has_attn = cfg["up_block_types"][b] == "CrossAttnUpBlock2D"
            return f"output_blocks.{b * (L + 1) + L}.{2 if has_attn else 1}.conv." + p[-1]
    raise KeyError(key)


def vae_key(key, cfg):
    """diffusers VAE key -> (LDM key, 1x1 conv?) (inverse of convert_ldm_vae_checkpoint)."""
    if key in VAE_LAYERS:
        return VAE_LAYERS[key], False
    n = len(cfg["block_out_channels"])
    p = key.split(".")
    half = p[0]
    resnet = lambda rest: ".".join(["nin_shortcut" if rest[0] == "conv_shortcut" else rest[0]] + rest[1:])  # noqa
    if p[1] == "down_blocks":
        if p[3] == "resnets":
            return f"{half}.down.{p[2]}.block.{p[4]}." + resnet(p[5:]), False
        return f"{half}.down.{p[2]}.downsample.conv." + p[-1], False
    if p[1] == "up_blocks":
        i = n - 1 - int(p[2])
        if p[3] == "resnets":
            return f"{half}.up.{i}.block.{p[4]}." + resnet(p[5:]), False
        return f"{half}.up.{i}.upsample.conv." + p[-1], False
    if p[1] == "mid_block":
        if p[2] == "resnets":
            return f"{half}.mid.block_{int(p[3]) + 1}." + resnet(p[4:]), False
        sub = ".".join(p[4:-1])
        return f"{half}.mid.attn_1.{VAE_ATTN_TO_LDM[sub]}.{p[-1]}", p[-1] == "weight" and sub != "group_norm"
    raise KeyError(key)


OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                  "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
OPENCLIP_TOP = {"embeddings.token_embedding.weight": "token_embedding.weight",
                "embeddings.position_embedding.weight": "positional_embedding",
                "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}


def single_entries(spec, folder_keys, unet_cfg, vae_cfg, text_layers):
    """The single file's tensors as manifest entries (see the docstring)."""
    shapes = {(c, k): s for c, ks in folder_keys.items() for k, s in ks}
    out = []

    def add(key, comps, shape=None, dtype="F32"):
        shape = list(shape if shape is not None else shapes[comps[0]])
        out.append(dict(key=key, dtype=dtype, shape=shape, **{"from": [list(c) for c in comps]}))

    for k, _ in folder_keys["unet"]:
        add("model.diffusion_model." + unet_key(k, unet_cfg), [("unet", k)])
    for k, s in folder_keys["vae"]:
        ldm, conv = vae_key(k, vae_cfg)
        add("first_stage_model." + ldm, [("vae", k)], list(s) + [1, 1] if conv else s)
    if spec["family"] == "SD1":
        for k, _ in folder_keys["text_encoder"]:
            add("cond_stage_model.transformer.text_model." + k, [("text_encoder", k)])
        out.append(dict(key="cond_stage_model.transformer.text_model.embeddings.position_ids", dtype="I64",
                        shape=[1, 77], arange=True))
    else:
        P = "cond_stage_model.model."
        for k, _ in folder_keys["text_encoder"]:
            if k in OPENCLIP_TOP:
                add(P + OPENCLIP_TOP[k], [("text_encoder", k)])
                continue
            p = k.split(".")  # encoder.layers.i.<sub>.<leaf>
            i, sub, leaf = p[2], ".".join(p[3:-1]), p[-1]
            rb = f"{P}transformer.resblocks.{i}."
            if sub == "self_attn.q_proj":
                srcs = [("text_encoder", f"encoder.layers.{i}.self_attn.{x}_proj.{leaf}") for x in "qkv"]
                s = shapes[srcs[0]]
                add(rb + "attn.in_proj_" + leaf, srcs, [3 * s[0]] + list(s[1:]))
            elif sub in ("self_attn.k_proj", "self_attn.v_proj"):
                continue
            else:
                add(rb + OPENCLIP_LAYER[sub] + "." + leaf, [("text_encoder", k)])
        # OpenCLIP's last resblock (SD 2.x conditions on the penultimate
        # layer: diffusers drops it), the projection and logit scale.
        C, rb = TEXT_WIDTH, f"{P}transformer.resblocks.{text_layers}."
        extra = [("ln_1.weight", [C]), ("ln_1.bias", [C]), ("attn.in_proj_weight", [3 * C, C]),
                 ("attn.in_proj_bias", [3 * C]), ("attn.out_proj.weight", [C, C]), ("attn.out_proj.bias", [C]),
                 ("ln_2.weight", [C]), ("ln_2.bias", [C]), ("mlp.c_fc.weight", [TEXT_MLP, C]),
                 ("mlp.c_fc.bias", [TEXT_MLP]), ("mlp.c_proj.weight", [C, TEXT_MLP]), ("mlp.c_proj.bias", [C])]
        for leaf, s in extra:
            out.append(dict(key=rb + leaf, dtype="F32", shape=s, detw=rb + leaf))
        out.append(dict(key=P + "text_projection", dtype="F32", shape=[C, C], detw=P + "text_projection"))
        out.append(dict(key=P + "logit_scale", dtype="F32", shape=[], detw=P + "logit_scale"))
    out.append(dict(key="alphas_cumprod", dtype="F32", shape=[1000], detw="alphas_cumprod"))
    return out


def entry_value(e, folder_tensors):
    if "arange" in e:
        return np.arange(int(np.prod(e["shape"])), dtype=np.int64).reshape(e["shape"])
    if "detw" in e:
        return detweights.tensor(e["detw"], tuple(e["shape"]))
    parts = [folder_tensors[c][k].numpy().reshape(-1) for c, k in e["from"]]
    return np.concatenate(parts).astype(np.float32).reshape(e["shape"])


def digest(entries, values):
    """CRC-32 (zlib) of every tensor's bytes in manifest order."""
    crc = 0
    for e in entries:
        crc = zlib.crc32(np.ascontiguousarray(values[e["key"]]).tobytes(), crc)
    return crc


# ---------------------------------------------------------------------------
# Checks against the reference
# ---------------------------------------------------------------------------

def same_dict(name, got, want, allowed_extra=()):
    missing = sorted(set(want) - set(got))
    extra = sorted(k for k in set(got) - set(want) if not any(k.startswith(a) for a in allowed_extra))
    assert not missing and not extra, f"{name}: missing {missing[:5]} extra {extra[:5]}"
    for k in want:
        a, b = got[k], want[k]
        assert tuple(a.shape) == tuple(b.shape), f"{name}: {k} shape {tuple(a.shape)} vs {tuple(b.shape)}"
        assert torch.equal(a.float(), b.float()), f"{name}: {k} values differ"
    print(f"  {name}: {len(want)} tensors identical")


def check_conversions(spec, single_path, folder):
    ckpt = load_file(single_path)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"))
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae"))
    text = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"))
    same_dict("convert_ldm_unet_checkpoint", sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config)),
              unet.state_dict())
    same_dict("convert_ldm_vae_checkpoint", sfu.convert_ldm_vae_checkpoint(ckpt, dict(vae.config)), vae.state_dict())
    if spec["family"] == "SD1":
        conv = sfu.convert_ldm_clip_checkpoint(ckpt)
        extra = ("embeddings.position_ids",)
    else:
        conv = sfu.convert_open_clip_checkpoint(text, ckpt, prefix="cond_stage_model.model.")
        extra = (f"text_model.encoder.layers.{spec['text_layers']}.", "text_projection.weight")
    conv = {k.removeprefix("text_model."): v for k, v in conv.items()}
    extra = tuple(e.removeprefix("text_model.") for e in extra)
    same_dict(f"convert_{'ldm' if spec['family'] == 'SD1' else 'open'}_clip_checkpoint", conv, text.state_dict(),
              extra)


def to_u8(images):
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def run(pipe):
    g = GENERATE
    pipe.set_progress_bar_config(disable=True)
    return to_u8(pipe(g["prompt"], negative_prompt=g["negative_prompt"] or None, width=g["width"],
                      height=g["height"], num_inference_steps=g["steps"], guidance_scale=g["guidance"],
                      generator=[torch.Generator("cpu").manual_seed(g["seed"])], output_type="np").images)


def check_pipelines(single_path, folder):
    ref = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    sf = StableDiffusionPipeline.from_single_file(single_path, config=folder, local_files_only=True,
                                                  safety_checker=None, requires_safety_checker=False)
    for name in ("unet", "vae", "text_encoder"):
        same_dict(f"from_single_file {name}", getattr(sf, name).state_dict(), getattr(ref, name).state_dict())
    assert type(sf.scheduler) is type(ref.scheduler) and dict(sf.scheduler.config) == dict(ref.scheduler.config)
    a, b = run(ref), run(sf)
    assert np.array_equal(a, b), "folder and single-file images differ in diffusers"
    print(f"  images: folder == from_single_file, mean {a.mean():.1f}, std {a.std():.1f}")
    return a


# ---------------------------------------------------------------------------

def expected_inference(spec, unet, vae, text, sched):
    u, v, t = unet.config, vae.config, text.config
    return {
        "unet": {k: (list(u[k]) if isinstance(u[k], (list, tuple)) else u[k]) for k in (
            "in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
            "up_block_types", "cross_attention_dim", "use_linear_projection", "sample_size")},
        "unet_heads": [c // 64 for c in spec["block_out"]] if spec["heads"] is None else [8] * 3,
        "vae": {k: (list(v[k]) if isinstance(v[k], (list, tuple)) else v[k]) for k in (
            "in_channels", "out_channels", "block_out_channels", "layers_per_block", "latent_channels",
            "sample_size", "scaling_factor")},
        "text_encoder": {k: getattr(t, k) for k in (
            "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
            "max_position_embeddings", "hidden_act")},
        "scheduler": {"_class_name": type(sched).__name__, "prediction_type": sched.config.prediction_type},
    }


def build(name, spec, tmp):
    print(f"{name}:")
    unet, vae, text, sched = make_components(spec)
    tok = make_tokenizer(spec["family"], tmp)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = os.path.join(tmp, name)
    pipe.save_pretrained(folder, safe_serialization=True)
    files = {"unet": "unet/diffusion_pytorch_model.safetensors", "vae": "vae/diffusion_pytorch_model.safetensors",
             "text_encoder": "text_encoder/model.safetensors"}
    tensors = {c: load_file(os.path.join(folder, f)) for c, f in files.items()}
    for c, td in tensors.items():  # the folder's values are detweights of their own key
        for k, v in td.items():
            assert torch.equal(v, torch.from_numpy(detweights.tensor(k, tuple(v.shape)))), (c, k)
    folder_keys = {c: [(k, list(v.shape)) for k, v in sorted(td.items())] for c, td in tensors.items()}
    entries = single_entries(spec, folder_keys, dict(unet.config), dict(vae.config), spec["text_layers"])
    values = {e["key"]: entry_value(e, tensors) for e in entries}
    single_path = os.path.join(tmp, name + ".safetensors")
    np_save_file(values, single_path, metadata={"format": "pt"})
    check_conversions(spec, single_path, folder)
    image = check_pipelines(single_path, folder)
    jsons = {}
    for rel in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                "scheduler/scheduler_config.json"):
        with open(os.path.join(folder, rel)) as f:
            jsons[rel] = json.load(f)
    jsons["model_index.json"]["tokenizer"] = [None, None]  # no tokenizer/: the built-in vocabulary
    return {
        "format": FORMAT,
        "script": "scripts/make_single_file.py",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "detweights": detweights.FORMAT},
        "family": spec["family"],
        "folder": {"json": jsons, "files": {files[c]: [[k, s] for k, s in ks] for c, ks in folder_keys.items()},
                   "components": files},
        "single": entries,
        "digest": "%08x" % digest(entries, values),
        "generate": dict(GENERATE, image_hex=image.tobytes().hex()),
        "expect": expected_inference(spec, unet, vae, text, sched),
    }


def main():
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in MODELS.items():
            doc = build(name, spec, tmp)
            path = os.path.join(OUT, name + ".json")
            with open(path, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.write("\n")
            print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes, digest {doc['digest']})")


if __name__ == "__main__":
    main()
