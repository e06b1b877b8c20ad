#!/usr/bin/env python3
"""Trains the libdiffuse demo model from scratch: an AutoencoderKL, a
CLIPTextModel (real CLIP BPE tokenizer) and a UNet2DConditionModel in the
Stable Diffusion 1.x architecture, on the procedural dataset of dataset.py,
and saves a diffusers pipeline folder with fp16 safetensors weights.

Stages:
  1. VAE: 64x64 RGB <-> 16x16x4 latents (L1 + MSE + small KL).
  2. scaling_factor = 1 / std of the posterior samples of the training
     latents, stored in the VAE config; the training set is encoded once.
  3. Text encoder + UNet jointly: DDPM epsilon objective (SD 1.x beta
     schedule), min-SNR-5 loss weights, 10 % empty captions for
     classifier-free guidance, EMA of the weights (saved).

Deterministic for a seed on one device and thread count (torch.manual_seed,
explicit torch.Generator for every random draw, dataset.py's own seeding).

Usage:
  train.py --out models/demo --seed 0                 # full run (2 CPU threads)
  train.py --out models/demo --seed 0 --device cuda   # same settings on a GPU
  train.py --smoke                                    # tiny end-to-end check
  train.py --bench                                    # time the full settings

Run with the reference venv: .venv-ref/bin/python scripts/demo_model/train.py
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np          # noqa: E402
import torch                # noqa: E402

import dataset              # noqa: E402

BPE_GZ = os.path.join(ROOT, "lib", "text", "bpe_simple_vocab_16e6.txt.gz")

# --------------------------------------------------------------------------
# Settings. "full" is what the bundled model is trained with; "smoke" only
# proves the code path and the saved format.

FULL = dict(
    n_train=40000,
    vae=dict(block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=4),
    vae_steps=5000, vae_batch=16, vae_lr=2e-3, vae_kl=1e-6,
    text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3,
              num_attention_heads=4),
    unet=dict(block_out_channels=(64, 128, 128), layers_per_block=1,
              attention_head_dim=4, norm_num_groups=8),
    unet_steps=3000, unet_batch=64, unet_lr=1e-3,
    ema=0.999, cfg_drop=0.1, min_snr=5.0, warmup=200,
)

SMOKE = dict(
    n_train=3000,
    vae=dict(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=4),
    vae_steps=300, vae_batch=16, vae_lr=2e-3, vae_kl=1e-6,
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=2),
    unet=dict(block_out_channels=(32, 64, 64), layers_per_block=1,
              attention_head_dim=2, norm_num_groups=8),
    unet_steps=400, unet_batch=16, unet_lr=1e-3,
    ema=0.99, cfg_drop=0.1, min_snr=5.0, warmup=30,
)

LATENT = 16            # latent side for 64x64 images (VAE factor 4)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# --------------------------------------------------------------------------
# Models

def make_tokenizer(tmpdir):
    """CLIPTokenizer built from OpenAI's BPE file exactly as CLIP builds it
    (scripts/make_clip_vocab.py); returns (tokenizer, dir with vocab/merges)."""
    import make_clip_vocab
    from transformers import CLIPTokenizer
    d = os.path.join(tmpdir, "clip_vocab")
    make_clip_vocab.main(["make_clip_vocab.py", BPE_GZ, d])
    tok = CLIPTokenizer.from_pretrained(d, model_max_length=77, pad_token="<|endoftext|>")
    return tok, d


def make_vae(cfg):
    from diffusers import AutoencoderKL
    n = len(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"], latent_channels=4,
        norm_num_groups=cfg["norm_num_groups"], sample_size=dataset.SIZE,
        scaling_factor=1.0)


def make_text_encoder(cfg):
    from transformers import CLIPTextConfig, CLIPTextModel
    c = CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
        projection_dim=cfg["hidden_size"], **cfg)
    return CLIPTextModel(c)


def make_unet(cfg, cross_dim):
    from diffusers import UNet2DConditionModel
    ch = tuple(cfg["block_out_channels"])
    n = len(ch)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4,
        down_block_types=down, up_block_types=up, block_out_channels=ch,
        layers_per_block=cfg["layers_per_block"], cross_attention_dim=cross_dim,
        attention_head_dim=cfg["attention_head_dim"], norm_num_groups=cfg["norm_num_groups"])


def make_noise_scheduler():
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False,
                         prediction_type="epsilon")


def make_inference_scheduler():
    """The scheduler/ config saved with the model: SD 1.5's PNDM settings."""
    from diffusers import PNDMScheduler
    return PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", skip_prk_steps=True,
                         set_alpha_to_one=False, steps_offset=1,
                         prediction_type="epsilon")


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def to_pixels(imgs_u8, device):
    x = torch.from_numpy(imgs_u8).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


# --------------------------------------------------------------------------
# Stages

def train_vae(vae, imgs, cfg, g, device, steps=None, batch=None):
    steps = cfg["vae_steps"] if steps is None else steps
    batch = cfg["vae_batch"] if batch is None else batch
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["vae_lr"], betas=(0.9, 0.99),
                            weight_decay=0.0)
    n = len(imgs)
    vae.train()
    t0 = time.time()
    c0 = time.process_time()
    hist = []
    for step in range(steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, steps, cfg["vae_lr"], cfg["warmup"])
        idx = torch.randint(n, (batch,), generator=g).numpy()
        x = to_pixels(imgs[idx], device)
        post = vae.encode(x).latent_dist
        eps = torch.randn(post.mean.shape, generator=g).to(device)
        z = post.mean + post.std * eps
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = ((rec - x) ** 2).mean()
        kl = post.kl().mean()
        loss = l1 + mse + cfg["vae_kl"] * kl
        l1, mse, kl = l1.detach(), mse.detach(), kl.detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        hist.append(float(mse))
        if (step + 1) % max(1, steps // 20) == 0 or step == 0:
            el = time.time() - t0
            log("vae step %d/%d  l1 %.4f  mse %.5f  kl %.1f  %.2f s/step (cpu %.2f)  eta %.1f min" % (
                step + 1, steps, float(l1), float(mse), float(kl), el / (step + 1),
                (time.process_time() - c0) / (step + 1),
                el / (step + 1) * (steps - step - 1) / 60))
    vae.eval()
    return dict(seconds=time.time() - t0, cpu_seconds=time.process_time() - c0,
                steps=steps, batch=batch, final_mse=float(np.mean(hist[-50:])))


@torch.no_grad()
def encode_all(vae, imgs, device, batch=256):
    """Posterior (mean, std) of every training image, fp16 on the CPU."""
    means, stds = [], []
    for i in range(0, len(imgs), batch):
        post = vae.encode(to_pixels(imgs[i:i + batch], device)).latent_dist
        means.append(post.mean.half().cpu())
        stds.append(post.std.half().cpu())
    return torch.cat(means), torch.cat(stds)


def train_unet(unet, te, ids, empty_ids, mean, std, scale, cfg, g, device,
               steps=None, batch=None, ckpt=None, ckpt_every=100, stop_after=None):
    steps = cfg["unet_steps"] if steps is None else steps
    batch = cfg["unet_batch"] if batch is None else batch
    sched = make_noise_scheduler()
    acp = sched.alphas_cumprod.to(device)
    snr = acp / (1 - acp)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["unet_lr"], betas=(0.9, 0.99), weight_decay=0.01)
    ema_u = copy.deepcopy(unet).requires_grad_(False)
    ema_t = copy.deepcopy(te).requires_grad_(False)
    ema_pairs = list(zip(list(ema_u.parameters()) + list(ema_t.parameters()), params))
    n = len(ids)
    unet.train()
    te.train()
    t0 = time.time()
    c0 = time.process_time()
    hist = []
    first = 0
    state = ckpt_load(ckpt, "unet")
    if state is not None:  # resume: same weights, optimizer, EMA and generator state
        unet.load_state_dict(state["unet"])
        te.load_state_dict(state["te"])
        ema_u.load_state_dict(state["ema_u"])
        ema_t.load_state_dict(state["ema_t"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["g"])
        hist, first = state["hist"], state["step"]
        log("resumed the UNet stage at step %d/%d from %s" % (first, steps, ckpt))
    for step in range(first, steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, steps, cfg["unet_lr"], cfg["warmup"])
        idx = torch.randint(n, (batch,), generator=g)
        eps_lat = torch.randn((batch, 4, LATENT, LATENT), generator=g)
        z = (mean[idx].float() + std[idx].float() * eps_lat) * scale
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        drop = torch.rand(batch, generator=g) < cfg["cfg_drop"]
        tok = ids[idx].clone()
        tok[drop] = empty_ids
        z, noise, t, tok = z.to(device), noise.to(device), t.to(device), tok.to(device)
        zt = sched.add_noise(z, noise, t)
        enc = te(tok)[0]
        pred = unet(zt, t, encoder_hidden_states=enc).sample
        w = torch.clamp(snr[t], max=cfg["min_snr"]) / snr[t]
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (w * per).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(cfg["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in ema_pairs:
                pe.lerp_(p, 1 - d)
        hist.append(float(per.detach().mean()))
        if ckpt and ((step + 1) % ckpt_every == 0 or step + 1 == steps):
            ckpt_save(ckpt, "unet", dict(unet=unet.state_dict(), te=te.state_dict(), ema_u=ema_u.state_dict(),
                                         ema_t=ema_t.state_dict(), opt=opt.state_dict(), g=g.get_state(),
                                         hist=hist, step=step + 1))
        if ckpt and stop_after is not None and step + 1 >= stop_after and step + 1 < steps:
            ckpt_save(ckpt, "unet", dict(unet=unet.state_dict(), te=te.state_dict(), ema_u=ema_u.state_dict(),
                                         ema_t=ema_t.state_dict(), opt=opt.state_dict(), g=g.get_state(),
                                         hist=hist, step=step + 1))
            log("stopped after UNet step %d (--stop-after); run the same command to go on" % (step + 1))
            sys.exit(3)
        if (step + 1) % max(1, steps // 20) == 0 or step == 0:
            el = time.time() - t0
            done = step + 1 - first
            log("unet step %d/%d  loss %.4f (eps mse %.4f)  %.2f s/step (cpu %.2f)  eta %.1f min" % (
                step + 1, steps, float(loss.detach()), float(np.mean(hist[-20:])), el / done,
                (time.process_time() - c0) / done, el / done * (steps - step - 1) / 60))
    ema_u.eval()
    ema_t.eval()
    return ema_u, ema_t, dict(seconds=time.time() - t0, cpu_seconds=time.process_time() - c0,
                              steps=steps, batch=batch,
                              final_eps_mse=float(np.mean(hist[-50:])))


# --------------------------------------------------------------------------
# Checkpoints (--checkpoint DIR): the VAE stage's result and the UNet stage
# every --checkpoint-every steps, so a run can stop (or be stopped) and go on
# later with the same command: the generator state is saved with the weights,
# so a resumed run draws exactly what an uninterrupted one would.

def ckpt_save(d, name, state):
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, name + ".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(d, name + ".pt"))


def ckpt_load(d, name):
    path = os.path.join(d, name + ".pt") if d else None
    if not path or not os.path.exists(path):
        return None
    return torch.load(path, weights_only=False)


# --------------------------------------------------------------------------
# Saving and sampling

def save_pipeline(out, vae, te, unet, tok, vocab_dir):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).cpu().half(), text_encoder=copy.deepcopy(te).cpu().half(),
        tokenizer=tok, unet=copy.deepcopy(unet).cpu().half(),
        scheduler=make_inference_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    if os.path.isdir(out):
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    # The files SD 1.x folders carry and C tokenizers read: vocab.json and
    # merges.txt (transformers loads from them too); tokenizer.json (3.6 MB,
    # the same data in the tokenizers library's format) is dropped to stay
    # in the size budget, as SD 1.x folders do without it.
    tdir = os.path.join(out, "tokenizer")
    if os.path.exists(os.path.join(tdir, "tokenizer.json")):
        os.remove(os.path.join(tdir, "tokenizer.json"))
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(vocab_dir, f), os.path.join(tdir, f))
    tcfg_path = os.path.join(tdir, "tokenizer_config.json")
    with open(tcfg_path) as f:
        tcfg = json.load(f)
    for k in ("is_local", "local_files_only"):     # loader state, not configuration
        tcfg.pop(k, None)
    with open(tcfg_path, "w") as f:
        json.dump(tcfg, f, indent=2)
    with open(os.path.join(tdir, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                   "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, f, indent=2)
    total = 0
    for dp, _, fs in os.walk(out):
        for f in fs:
            total += os.path.getsize(os.path.join(dp, f))
    return total


def sample_grid(model_dir, specs, path, seed, steps=25, guidance=5.0):
    """Loads the saved folder with diffusers' StableDiffusionPipeline and
    generates one image per spec; writes [target | generated] pairs."""
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(seed)
    out = pipe([s["caption"] for s in specs], num_inference_steps=steps,
               guidance_scale=guidance, generator=gen, output_type="np").images
    imgs = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    tiles = []
    for s, im in zip(specs, imgs):
        tiles += [dataset.render(copy.deepcopy(s)), im]
    dataset.grid(tiles, 8 if len(tiles) >= 8 else len(tiles), scale=3).save(path)
    with open(os.path.splitext(path)[0] + ".txt", "w") as f:
        for s in specs:
            f.write(s["caption"] + "\n")
    return imgs, pipe


# --------------------------------------------------------------------------

def build_models(cfg):
    vae = make_vae(cfg["vae"])
    te = make_text_encoder(cfg["text"])
    unet = make_unet(cfg["unet"], cfg["text"]["hidden_size"])
    return vae, te, unet


def describe(vae, te, unet):
    r = {}
    for name, m in (("vae", vae), ("text_encoder", te), ("unet", unet)):
        p = n_params(m)
        r[name] = dict(params=p, fp16_mb=round(p * 2 / 1e6, 2))
        log("%-12s %9d params  %.2f MB fp16" % (name, p, p * 2 / 1e6))
    return r


def bench(cfg, device, seed, nsteps=6):
    """Times a few steps of each stage at the full settings and projects the
    full run's duration at this thread count."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    vae, te, unet = build_models(cfg)
    vae.to(device), te.to(device), unet.to(device)
    describe(vae, te, unet)
    imgs, caps, _ = dataset.make_training_set(seed, 512)
    t = time.process_time()
    dataset.make_training_set(seed + 1, 1000)
    gen_s = (time.process_time() - t) / 1000
    res = {}
    c = dict(cfg, warmup=1)
    train_vae(vae, imgs, c, g, device, steps=1)             # warm-up
    r = train_vae(vae, imgs, c, g, device, steps=nsteps)
    res["vae_s_per_step"] = r["seconds"] / nsteps
    res["vae_cpu_s_per_step"] = r["cpu_seconds"] / nsteps
    t, tc = time.time(), time.process_time()
    m, s = encode_all(vae, imgs, device)
    res["encode_s_per_image"] = (time.time() - t) / len(imgs)
    res["encode_cpu_s_per_image"] = (time.process_time() - tc) / len(imgs)
    tok = make_tokenizer(tempfile.mkdtemp())[0]
    ids = tok(caps, padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    train_unet(unet, te, ids, empty, m, s, 1.0, c, g, device, steps=1)
    r = train_unet(unet, te, ids, empty, m, s, 1.0, c, g, device, steps=nsteps)[2]
    res["unet_s_per_step"] = r["seconds"] / nsteps
    res["unet_cpu_s_per_step"] = r["cpu_seconds"] / nsteps
    res["dataset_s_per_image"] = gen_s
    res["threads"] = torch.get_num_threads()
    # Process CPU time is what the same work needs on an idle core (at one
    # thread); wall time includes whatever else the machine is doing.
    for kind, infix in (("wall", "_s_"), ("cpu", "_cpu_s_")):
        est = dict(
            dataset_min=gen_s * cfg["n_train"] / 60,
            vae_min=res["vae" + infix + "per_step"] * cfg["vae_steps"] / 60,
            encode_min=res["encode" + infix + "per_image"] * cfg["n_train"] / 60,
            unet_min=res["unet" + infix + "per_step"] * cfg["unet_steps"] / 60)
        est["total_min"] = sum(est.values())
        res["estimate_min_from_" + kind] = {k: round(v, 1) for k, v in est.items()}
    log("bench: " + json.dumps(res, indent=1))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="model folder to write (default: a temp dir with --smoke)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 2; 1 with --smoke/--bench)")
    ap.add_argument("--smoke", action="store_true", help="tiny end-to-end run")
    ap.add_argument("--bench", action="store_true", help="time the full settings")
    ap.add_argument("--bench-steps", type=int, default=6)
    ap.add_argument("--samples", help="PNG grid of samples (default OUT/../<name>-samples.png)")
    ap.add_argument("--checkpoint", help="folder for resumable checkpoints (the same command resumes)")
    ap.add_argument("--checkpoint-every", type=int, default=100, help="UNet steps between checkpoints")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="with --checkpoint: stop after this many UNet steps in total (resume later)")
    for k in ("n_train", "vae_steps", "vae_batch", "unet_steps", "unet_batch"):
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=None)
    for k in ("vae_lr", "unet_lr"):
        ap.add_argument("--" + k.replace("_", "-"), type=float, default=None)
    a = ap.parse_args()

    if a.device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # deterministic cuBLAS
    threads = a.threads or (1 if (a.smoke or a.bench) else 2)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(a.device)
    cfg = copy.deepcopy(SMOKE if a.smoke else FULL)
    for k in ("n_train", "vae_steps", "vae_batch", "unet_steps", "unet_batch", "vae_lr", "unet_lr"):
        if getattr(a, k) is not None:
            cfg[k] = getattr(a, k)
    if a.bench:
        bench(cfg, device, a.seed, a.bench_steps)
        return
    if not a.out:
        if not a.smoke:
            ap.error("--out is required")
        a.out = os.path.join(tempfile.mkdtemp(prefix="demo-smoke-"), "model")
    log("settings: %s  threads %d  device %s" % ("smoke" if a.smoke else "full", threads, device))
    T0 = time.time()
    timings = {}

    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed + 1)
    work = tempfile.mkdtemp(prefix="demo-train-")
    tok, vocab_dir = make_tokenizer(work)

    t = time.time()
    imgs, caps, _ = dataset.make_training_set(a.seed, cfg["n_train"], log=log)
    ids = tok(caps, padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids
    empty_ids = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    assert int((ids == 49407).sum(1).min()) >= 1, "a caption was truncated"
    timings["dataset_s"] = time.time() - t
    log("dataset: %d images, %d distinct captions, %.1f s" % (
        len(caps), len(set(caps)), timings["dataset_s"]))

    vae, te, unet = build_models(cfg)
    sizes = describe(vae, te, unet)
    vae.to(device), te.to(device), unet.to(device)

    state = ckpt_load(a.checkpoint, "vae")
    if state is not None:
        log("stage 1: VAE from the checkpoint in %s" % a.checkpoint)
        vae.load_state_dict(state["vae"])
        vae_stats, mean, std, scale = state["stats"], state["mean"], state["std"], state["scale"]
        g.set_state(state["g"])
        vae.eval()
    else:
        log("stage 1: VAE")
        vae_stats = train_vae(vae, imgs, cfg, g, device)
        mean, std = encode_all(vae, imgs, device)
        k = min(len(mean), 4000)
        zs = mean[:k].float() + std[:k].float() * torch.randn(mean[:k].shape, generator=g)
        scale = float(1.0 / zs.std())
        log("latents: mean %.4f std %.4f" % (float(zs.mean()), float(zs.std())))
        if a.checkpoint:
            ckpt_save(a.checkpoint, "vae", dict(vae=vae.state_dict(), stats=vae_stats, mean=mean, std=std,
                                                scale=scale, g=g.get_state()))
    t = time.time()
    vae.register_to_config(scaling_factor=scale)
    timings["encode_s"] = time.time() - t
    log("scaling_factor %.5f" % scale)
    with torch.no_grad():
        x = to_pixels(imgs[:256], device)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        vae_stats["recon_mse_256"] = float(((rec - x) ** 2).mean())
        rec16 = copy.deepcopy(vae).half().float()
        rec16 = rec16.decode(rec16.encode(x).latent_dist.mean).sample
        vae_stats["recon_mse_256_fp16_weights"] = float(((rec16 - x) ** 2).mean())
    log("vae reconstruction mse %.5f (fp16-rounded weights %.5f)" % (
        vae_stats["recon_mse_256"], vae_stats["recon_mse_256_fp16_weights"]))

    log("stage 2: text encoder + UNet")
    ema_u, ema_t, unet_stats = train_unet(unet, te, ids, empty_ids, mean, std, scale, cfg, g, device,
                                          ckpt=a.checkpoint, ckpt_every=a.checkpoint_every,
                                          stop_after=a.stop_after)

    total = save_pipeline(a.out, vae, ema_t, ema_u, tok, vocab_dir)
    log("saved %s (%.2f MB)" % (a.out, total / 1e6))
    timings["total_train_s"] = time.time() - T0
    timings.update(vae_s=vae_stats["seconds"], unet_s=unet_stats["seconds"])

    samples = a.samples or os.path.join(os.path.dirname(os.path.abspath(a.out)),
                                        os.path.basename(os.path.normpath(a.out)) + "-samples.png")
    ev = dataset.eval_specs(a.seed)
    pick = [s for s in ev if s["split"] == "single"][:2] + [s for s in ev if s["split"] == "double"][:2]
    if not a.smoke:
        pick = ([s for s in ev if s["split"] == "single"][:8] +
                [s for s in ev if s["split"] == "double"][:8])
    t = time.time()
    gen, _ = sample_grid(a.out, pick, samples, a.seed)
    timings["sample_s"] = time.time() - t
    log("diffusers StableDiffusionPipeline loaded %s and generated %d images -> %s" % (
        a.out, len(gen), samples))
    try:
        import evaluate_reference
        sc = evaluate_reference.score_batch(gen, pick)
        log("faithfulness of these samples (not the full eval): %s" % json.dumps(sc["summary"]))
    except ImportError:
        sc = None
    info = dict(settings="smoke" if a.smoke else "full", seed=a.seed, threads=threads,
                device=str(device), torch=torch.__version__, config=cfg, sizes=sizes,
                saved_bytes=total, scaling_factor=scale, vae=vae_stats, unet=unet_stats,
                timings=timings, sample_grid=samples,
                sample_scores=sc["summary"] if sc else None)
    with open(os.path.splitext(samples)[0] + "-train.json", "w") as f:
        json.dump(info, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    log("done in %.1f min" % ((time.time() - T0) / 60))


if __name__ == "__main__":
    main()
