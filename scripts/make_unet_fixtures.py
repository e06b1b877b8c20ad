"""make_unet_fixtures.py - reference outputs of diffusers' UNet2DConditionModel
for tests/test_unet.c.

Weights come from scripts/detweights.py (the C test rebuilds them bit-for-bit
from the tensor list stored in each fixture, so nothing large is committed),
except for the "tiny-sd1-folder" case, which loads the committed model folder
tests/fixtures/models/tiny-sd1/unet exactly as the library does. Inputs are
drawn from a seeded numpy RNG and stored; outputs are diffusers' float32 CPU
forward.

Cases: the tiny config diffusers' tests use (32x32 with two different
timesteps, and latents that are not multiples of 2: 21x27, 20x15); a
3-level variant exercising per-level head counts, linear projections,
2 transformer layers, flip_sin_to_cos false and freq_shift 1 at 13x11; a
9-channel inpainting UNet; an SD 1.5-shaped and an SD 2-shaped UNet (16x16
with 77 tokens, and 12x20 with a short prompt, which is not a multiple of 8).

File layout (one file per model): line 1 "DIFFUSE-FIXTURE unet 1", line 2
one JSON object {name, config, weights ("detweights" + tensors [[name,
shape]...], or "folder" + model_dir), runs [{batch, height, width, seq,
timesteps}], versions}, then for each run float32 little-endian sample
(B, Cin, h, w), text (B, S, Dc) and output (B, Cout, h, w).
Run: nice -n 19 .venv-ref/bin/python scripts/make_unet_fixtures.py
"""
import json
import os
import sys
import zlib

import diffusers
import numpy as np
import torch
from diffusers import UNet2DConditionModel

sys.path.insert(0, os.path.dirname(__file__))
import detweights  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "unet")

TINY = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
            norm_num_groups=32)
TINY3 = dict(block_out_channels=(32, 64, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
             down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
             attention_head_dim=[2, 4, 4], transformer_layers_per_block=2, use_linear_projection=True,
             flip_sin_to_cos=False, freq_shift=1, norm_num_groups=16, norm_eps=1e-6)
SD15 = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64, in_channels=4,
            out_channels=4, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
            attention_head_dim=8)
SD2 = dict(SD15, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
           upcast_attention=True, sample_size=96)

# name -> (config or model folder, [(batch, height, width, seq, timesteps)])
CASES = {
    "tiny": (TINY, [(2, 32, 32, 77, [999.0, 1.0]), (2, 21, 27, 77, [500.5, 500.5]), (1, 20, 15, 7, [250.0])]),
    "tiny3": (TINY3, [(2, 13, 11, 5, [981.0, 21.0])]),
    "inpaint": (dict(TINY, in_channels=9), [(2, 32, 32, 77, [601.0, 601.0])]),
    "sd15": (SD15, [(1, 16, 16, 77, [801.0]), (1, 12, 20, 9, [41.0])]),
    "sd2": (SD2, [(1, 16, 16, 77, [801.0]), (1, 12, 20, 9, [41.0])]),
    "tiny-sd1-folder": ("models/tiny-sd1/unet", [(2, 32, 32, 77, [761.0, 761.0])]),
}


def build(spec):
    """(model, weights metadata) for a config dict or a committed folder."""
    if isinstance(spec, str):
        model = UNet2DConditionModel.from_pretrained(os.path.join(ROOT, "tests", "fixtures", spec),
                                                     torch_dtype=torch.float32)
        return model.eval(), dict(weights="folder", model_dir=spec)
    torch.manual_seed(0)
    model = UNet2DConditionModel(**spec).eval()
    detweights.fill_module(model)
    tensors = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    return model, dict(weights="detweights", format=detweights.FORMAT, tensors=tensors)


def main():
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])
    for name, (spec, runs) in CASES.items():
        if only and name not in only:
            continue
        model, weights = build(spec)
        rng = np.random.default_rng(zlib.crc32(name.encode()))  # per case: any subset regenerates the same
        cfg = json.loads(model.to_json_string())
        cfg.pop("_name_or_path", None)  # where it was loaded from: a path of this machine
        blobs, run_meta = [], []
        for batch, h, w, seq, ts in runs:
            sample = rng.standard_normal((batch, cfg["in_channels"], h, w)).astype(np.float32)
            text = rng.standard_normal((batch, seq, cfg["cross_attention_dim"])).astype(np.float32)
            with torch.no_grad():
                out = model(torch.from_numpy(sample), torch.tensor(ts, dtype=torch.float32),
                            encoder_hidden_states=torch.from_numpy(text)).sample
            blobs += [sample, text, out.numpy().astype(np.float32)]
            run_meta.append(dict(batch=batch, height=h, width=w, seq=seq, timesteps=ts))
        meta = dict(name=name, config=cfg, runs=run_meta, **weights,
                    versions=dict(torch=torch.__version__, diffusers=diffusers.__version__, numpy=np.__version__))
        path = os.path.join(OUT, f"{name}.bin")
        with open(path, "wb") as f:
            f.write(b"DIFFUSE-FIXTURE unet 1\n")
            f.write(json.dumps(meta, separators=(",", ":")).encode() + b"\n")
            for b in blobs:
                f.write(b.astype("<f4").tobytes())
        print(f"wrote {path} ({os.path.getsize(path)} bytes)", flush=True)
        del model


if __name__ == "__main__":
    main()
