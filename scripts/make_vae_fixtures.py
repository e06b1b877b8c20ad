"""make_vae_fixtures.py - reference encoder moments and decoder outputs of
diffusers' AutoencoderKL for tests/test_vae.c.

Weights come from scripts/detweights.py (rebuilt bit-for-bit by the C test
from the parameter list stored in the fixture). For each case the fixture
holds the input image x (B, 3, H, W) in [-1, 1], the encoder's moments
(B, 2*latent, H/f, W/f) after quant_conv (mean, logvar before clamping),
latents z (B, latent, h, w) and the decoder's output for them (post_quant_conv
included), all float32. Cases with "tiled" in their JSON (small tiles: the
config's sample_size) also hold the same encode and decode with
enable_tiling(): moments_tiled (B, 2*latent, h, w) and decoded_tiled
(B, 3, H, W), diffusers' _tiled_encode / tiled_decode with overlapping tiles
blended linearly at the seams.

File layout: line 1 "DIFFUSE-FIXTURE vae 1", line 2 one JSON object
(config, params [[name, shape]...], shapes, versions), then x, moments, z,
decoded[, moments_tiled, decoded_tiled] as little-endian float32.
Run: .venv-ref/bin/python scripts/make_vae_fixtures.py
"""
import json
import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import AutoencoderKL

sys.path.insert(0, os.path.dirname(__file__))
import detweights  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vae")

TINY = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4, layers_per_block=1, norm_num_groups=32, sample_size=32)
SD = dict(block_out_channels=[128, 256, 512, 512], in_channels=3, out_channels=3,
          down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
          latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512)
# Three levels (f = 4) and 32-pixel tiles: 8-latent tiles every 6 latents,
# decoded tiles blended over 8 pixels; the 56 x 80 image needs 3 x 4 tiles
# with narrow ones at the right edge.
TILED = dict(block_out_channels=[32, 32, 64], in_channels=3, out_channels=3,
             down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
             latent_channels=4, layers_per_block=1, norm_num_groups=32, sample_size=32)
# name: (config, batch, H, W, tiled)
CASES = {"tiny": (TINY, 2, 32, 32, False), "tiny_odd": (TINY, 1, 24, 40, False), "sd": (SD, 1, 48, 32, False),
         "tiled": (TILED, 1, 56, 80, True)}


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(4321)
    os.makedirs(OUT, exist_ok=True)
    for name, (cfg, b, h, w, tiled) in CASES.items():
        vae = AutoencoderKL(**cfg).eval()
        detweights.fill_module(vae)
        f = 2 ** (len(cfg["block_out_channels"]) - 1)
        x = rng.uniform(-1, 1, (b, 3, h, w)).astype(np.float32)
        z = rng.standard_normal((b, cfg["latent_channels"], h // f, w // f)).astype(np.float32)
        with torch.no_grad():
            moments = vae.quant_conv(vae.encoder(torch.from_numpy(x)))
            decoded = vae.decode(torch.from_numpy(z)).sample
            extra = []
            if tiled:
                vae.enable_tiling()
                extra = [vae.encode(torch.from_numpy(x)).latent_dist.parameters.numpy(),
                         vae.decode(torch.from_numpy(z)).sample.numpy()]
                vae.disable_tiling()
        params = [[n, list(p.shape)] for n, p in vae.named_parameters()]
        config = dict(vae.config)
        config["_use_default_values"] = sorted(config.get("_use_default_values", []))  # a set: fix the order
        meta = dict(config=config, params=params, batch=b, height=h, width=w, factor=f,
                    weights=detweights.FORMAT,
                    **(dict(tiled=dict(tile_sample_min_size=vae.tile_sample_min_size,
                                       tile_latent_min_size=vae.tile_latent_min_size,
                                       tile_overlap_factor=vae.tile_overlap_factor)) if tiled else {}),
                    versions=dict(torch=torch.__version__, diffusers=diffusers.__version__))
        path = os.path.join(OUT, f"{name}.bin")
        with open(path, "wb") as fh:
            fh.write(b"DIFFUSE-FIXTURE vae 1\n")
            fh.write(json.dumps(meta).encode() + b"\n")
            for a in [x, moments.numpy(), z, decoded.numpy()] + extra:
                fh.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
