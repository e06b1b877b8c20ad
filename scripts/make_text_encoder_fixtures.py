"""make_text_encoder_fixtures.py - reference hidden states of transformers'
CLIPTextModel for tests/test_clip_text.c.

Weights come from scripts/detweights.py (rebuilt bit-for-bit by the C test,
so nothing large is committed). For each config the fixture holds the token
ids and, for each clip_skip k, what diffusers' encode_prompt produces:
final_layer_norm(hidden_states[-(k + 1)]) (k = 0: last_hidden_state).

File layout: line 1 "DIFFUSE-FIXTURE text_encoder 1", line 2 one JSON
object (config, batch, seq, clip_skips, versions), then int32 ids (B, S)
and float32 outputs (K, B, S, C), little-endian.
Run: .venv-ref/bin/python scripts/make_text_encoder_fixtures.py
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
import detweights  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "text_encoder")

CONFIGS = {
    # diffusers' own tests use this tiny CLIP text config
    "tiny": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                 max_position_embeddings=77, vocab_size=1000, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                 bos_token_id=0, eos_token_id=2, pad_token_id=1),
    # shaped like SD 1.5's openai/clip-vit-large-patch14 text tower
    "sd15": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                 max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                 bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
    # shaped like SD 2.x's OpenCLIP ViT-H text tower as diffusers stores it (23 layers, gelu)
    "sd2": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", layer_norm_eps=1e-5,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
}
SETTINGS = {"tiny": (2, [0, 1, 2]), "sd15": (1, [0, 1, 2]), "sd2": (1, [0, 1])}


def make_ids(cfg, batch, seq, rng):
    """BOS, random tokens, EOS, then padding — like a tokenized prompt."""
    v = cfg["vocab_size"]
    ids = np.full((batch, seq), cfg["pad_token_id"], dtype=np.int64)
    for b in range(batch):
        n = int(rng.integers(3, seq - 1))
        ids[b, 0] = cfg["bos_token_id"]
        ids[b, 1:n] = rng.integers(3, min(v, 49406), n - 1)
        ids[b, n] = cfg["eos_token_id"]
    return ids


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(1234)
    os.makedirs(OUT, exist_ok=True)
    for name, cfg in CONFIGS.items():
        batch, skips = SETTINGS[name]
        model = CLIPTextModel(CLIPTextConfig(**cfg)).eval()
        detweights.fill_module(model)
        ids = make_ids(cfg, batch, 77, rng)
        with torch.no_grad():
            res = model(torch.from_numpy(ids), output_hidden_states=True)
            outs = []
            for k in skips:
                if k == 0:
                    outs.append(res.last_hidden_state)
                else:
                    # diffusers calls text_encoder.text_model.final_layer_norm; transformers 5.x
                    # flattened CLIPTextModel (no .text_model), so take the module where it is.
                    inner = getattr(model, "text_model", model)
                    outs.append(inner.final_layer_norm(res.hidden_states[-(k + 1)]))
        meta = dict(config=cfg, batch=batch, seq=77, clip_skips=skips, weights=detweights.FORMAT,
                    versions=dict(torch=torch.__version__, transformers=transformers.__version__))
        path = os.path.join(OUT, f"{name}.bin")
        with open(path, "wb") as f:
            f.write(b"DIFFUSE-FIXTURE text_encoder 1\n")
            f.write(json.dumps(meta).encode() + b"\n")
            f.write(ids.astype("<i4").tobytes())
            f.write(torch.stack(outs).numpy().astype("<f4").tobytes())
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
