"""Train the course's mini Stable Diffusion from scratch, on a CPU or a GPU, resumably.

One command retrains everything with a fixed seed::

    python -m sdcourse.train --out runs/mini           # then exports to sdcourse/mini_model/

Stages (each saves checkpoints in ``--out`` and resumes from them when rerun):

1. **VAE**: an AutoencoderKL learns to squeeze 3 x 64 x 64 pictures into 4 x 8 x 8 latents
   (MSE + 0.5 L1 + a tiny KL term). Its scaling factor is then *measured*: 1 / std of the
   latents of every scene, so scaled latents have unit variance, as SD's 0.18215 does.
1b. **Decoder**: the encoder is frozen and the decoder alone is fine-tuned (sharper edges).
2. **Latent cache**: the posterior mean and std of all 1,680 scenes, computed once.
2b. **Robust decoder**: the decoder is fine-tuned again on latents with Gaussian noise added
   (up to 0.3 in scaled units), so that the UNet's slightly-off latents still decode to flat
   colours and sharp corners. The encoder, and so the UNet's training data, do not change.
3. **Text encoder + UNet**, trained together on the denoising loss of SD (epsilon
   prediction, scaled_linear schedule over 1000 steps) with
   * caption dropout (10% empty captions) so classifier-free guidance works,
   * captions with parts left out (size, position, background) so short prompts work,
   * offset noise (0.1 x a per-sample, per-channel constant) so the flat background
     colour can be learnt despite the signal SD's schedule leaves at t = 999,
   * min-SNR-5 loss weighting and an EMA of the weights, which is what is exported.
4. **Decoder polish**: the trained UNet draws 2,048 pictures from *training* captions (DDIM, 20 steps,
   guidance 1, 3, 5 and 7.5 in turn); those whose colour, background, position and size already match
   the caption are kept, and the decoder is fine-tuned to turn those latents into the caption's clean
   render (half of each batch; the other half as in 2b).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import mini_arch, shapes

MINI_MODEL_DIR = Path(__file__).parent / "mini_model"


def log(msg: str, out: Path | None = None):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if out is not None:
        with open(out / "train.log", "a") as f:
            f.write(line + "\n")


def scenes_tensor(scenes, resolution=mini_arch.RESOLUTION) -> torch.Tensor:
    """Render scenes to a float tensor in [-1, 1], shape (N, 3, H, W)."""
    arr = np.stack([np.asarray(shapes.render(s, resolution)) for s in scenes])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two pictures in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) / 2).square().mean().item()
    return 10 * math.log10(1 / max(mse, 1e-10))


def save_ckpt(path: Path, **state):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def resume(ckpt: Path, model, opt, steps: int, what: str, out: Path, device: str) -> int:
    """Load ``model`` and ``opt`` from ``ckpt`` if it exists; return the step to go on from (``steps`` when done)."""
    if not ckpt.exists():
        return 0
    state = torch.load(ckpt, map_location=device)
    model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
    start = state["step"]
    log(f"{what} already trained ({start} steps)" if start >= steps else f"{what}: resuming at step {start}", out)
    return start


@torch.no_grad()
def vae_psnr(vae, pictures: torch.Tensor) -> float:
    """PSNR of the VAE's round trip (posterior mode) on ``pictures``."""
    return psnr(vae.decode(vae.encode(pictures).latent_dist.mode()).sample, pictures)


# ---------------------------------------------------------------- stage 1: VAE
def train_vae(out: Path, steps: int, batch: int, seed: int, device: str):
    from diffusers import AutoencoderKL

    ckpt = out / "vae.pt"
    vae = AutoencoderKL(**mini_arch.VAE_CONFIG).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    start = resume(ckpt, vae, opt, steps, "VAE", out, device)
    if start >= steps:
        return vae.eval()
    all_scenes = shapes.all_scenes()
    held = scenes_tensor(all_scenes[::97]).to(device)
    rng = random.Random(seed + start)
    torch.manual_seed(seed + start)
    t0 = time.time()
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 1e-3, 100)
        x = scenes_tensor(rng.choices(all_scenes, k=batch)).to(device)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            p = vae_psnr(vae, held)
            rate = (step + 1 - start) / (time.time() - t0)
            log(f"VAE step {step + 1}/{steps} loss {loss.item():.4f} kl {kl.item():.3f} PSNR {p:.1f} dB on 18 scenes ({rate:.2f} steps/s)", out)
            save_ckpt(ckpt, model=vae.state_dict(), opt=opt.state_dict(), step=step + 1)
    return vae.eval()


def finetune_decoder(out: Path, vae, steps: int, batch: int, seed: int, device: str,
                     latent_noise: float = 0.0, scaling: float = 1.0, name: str = "decoder", lr: float = 5e-4):
    """Stage 1b: freeze the encoder (so the latents, and everything the UNet learns, stay put) and
    sharpen the decoder alone. Joint training leaves a blurry decoder (edges smeared into rings);
    the decoder alone, with its encoder fixed, learns much sharper pictures quickly.

    Stage 2b calls it again with ``latent_noise`` > 0: each latent gets Gaussian noise of a random
    strength up to ``latent_noise`` (in scaled-latent units, ``scaling`` converts), and the decoder
    learns to draw the clean picture anyway. The UNet's latents are never exactly on the encoder's
    manifold; a decoder that forgives small errors draws flat colours and sharp corners from them."""
    all_scenes = shapes.all_scenes()

    def batch_of_latents(rng):
        x = scenes_tensor(rng.choices(all_scenes, k=batch)).to(device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
            if latent_noise:
                strength = torch.rand(batch, 1, 1, 1, device=device) * latent_noise / scaling
                z = z + strength * torch.randn_like(z)
        return z, x

    return train_decoder(out, vae, name, steps, lr, seed + 7, device, batch_of_latents)


def train_decoder(out: Path, vae, name: str, steps: int, lr: float, seed: int, device: str, make_batch):
    """The loop that every decoder stage shares: only the decoder (and post_quant_conv) learns, from
    ``make_batch(rng) -> (latents, target pictures)``, with MSE + L1, a warm-up and cosine learning rate,
    checkpoints in ``out / f"{name}.pt"`` every 100 steps (resumed from when rerun)."""
    ckpt = out / f"{name}.pt"
    dec_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(dec_params, lr=lr, weight_decay=0.0)
    start = resume(ckpt, vae, opt, steps, name, out, device)
    if start >= steps:
        return vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in dec_params:
        p.requires_grad_(True)
    held = scenes_tensor(shapes.all_scenes()[::97]).to(device)
    rng = random.Random(seed + start)
    torch.manual_seed(seed + start)
    t0 = time.time()
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, 50)
        z, target = make_batch(rng)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, target) + F.l1_loss(rec, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec_params, 1.0)
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            p = vae_psnr(vae, held)
            rate = (step + 1 - start) / (time.time() - t0)
            log(f"{name} step {step + 1}/{steps} loss {loss.item():.4f} PSNR {p:.1f} dB on 18 scenes ({rate:.2f} steps/s)", out)
            save_ckpt(ckpt, model=vae.state_dict(), opt=opt.state_dict(), step=step + 1)
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae.eval()


@torch.no_grad()
def latent_cache(vae, device: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Posterior mean and std of every scene, and the measured scaling factor 1/std."""
    all_scenes = shapes.all_scenes()
    means, stds = [], []
    for i in range(0, len(all_scenes), 128):
        dist = vae.encode(scenes_tensor(all_scenes[i : i + 128]).to(device)).latent_dist
        means.append(dist.mean), stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    scaling = 1.0 / mean.std().item()
    return mean, std, scaling


# ---------------------------------------------------------- stage 2: UNet + text
class CaptionIds:
    """Tokenises captions once and remembers them (the grammar has few distinct captions)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in set(captions) if c not in self.cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            self.cache.update(zip(missing, ids))
        return torch.stack([self.cache[c] for c in captions])


def train_unet(out: Path, vae_scaling, mean, std, steps: int, batch: int, lr: float, seed: int, device: str,
               p_uncond: float = 0.1, offset_noise: float = 0.1, snr_gamma: float = 5.0, ema_decay: float = 0.999):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    ckpt = out / "unet.pt"
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**mini_arch.TEXT_CONFIG)).to(device)
    unet = UNet2DConditionModel(**mini_arch.UNET_CONFIG).to(device)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device)
        text_encoder.load_state_dict(state["text_encoder"]), unet.load_state_dict(state["unet"])
        if "opt" in state:  # a checkpoint seeded from exported weights has no optimizer state or EMA yet
            opt.load_state_dict(state["opt"])
        ema = [e.to(device) for e in state["ema"]] if "ema" in state else [p.detach().clone() for p in params]
        start = state["step"]
        log(f"UNet: resuming at step {start}", out)
    if start < steps:
        sched = DDPMScheduler(**{k: v for k, v in mini_arch.SCHEDULER_CONFIG.items() if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")})
        ab = sched.alphas_cumprod.to(device)
        snr = ab / (1 - ab)
        weight = torch.clamp(snr, max=snr_gamma) / snr  # min-SNR weighting for epsilon prediction
        tok = CaptionIds(CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer"))
        all_scenes = shapes.all_scenes()
        train_scenes = set(shapes.split_scenes()[0])
        train_idx = [i for i, s in enumerate(all_scenes) if s in train_scenes]  # held-out scenes stay unseen
        rng = random.Random(seed * 1000 + start)
        gen = torch.Generator(device="cpu").manual_seed(seed * 1000 + start)
        mean, std = mean.to(device), std.to(device)
        t0, ema_loss = time.time(), None
        for step in range(start, steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, lr, 300)
            idx = rng.choices(train_idx, k=batch)
            caps = ["" if rng.random() < p_uncond else shapes.random_caption(all_scenes[i], rng) for i in idx]
            ids = tok(caps).to(device)
            idx_t = torch.tensor(idx, device=device)
            eps_post = torch.randn(mean[idx_t].shape, generator=gen).to(device)
            x0 = (mean[idx_t] + std[idx_t] * eps_post) * vae_scaling
            noise = torch.randn(x0.shape, generator=gen).to(device)
            noise = noise + offset_noise * torch.randn(x0.shape[0], x0.shape[1], 1, 1, generator=gen).to(device)
            t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
            xt = sched.add_noise(x0, noise, t)
            cond = text_encoder(ids).last_hidden_state
            pred = unet(xt, t, cond).sample
            loss = ((pred - noise).square().mean(dim=(1, 2, 3)) * weight[t]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                d = min(ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
            ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
            if (step + 1) % 100 == 0 or step + 1 == steps:
                rate = (step + 1 - start) / (time.time() - t0)
                eta = (steps - step - 1) / rate / 60
                log(f"UNet step {step + 1}/{steps} loss {ema_loss:.4f} lr {opt.param_groups[0]['lr']:.2e} ({rate:.2f} steps/s, {eta:.0f} min left)", out)
            if (step + 1) % 500 == 0 or step + 1 == steps:
                save_ckpt(ckpt, text_encoder=text_encoder.state_dict(), unet=unet.state_dict(), opt=opt.state_dict(), ema=ema, step=step + 1)
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    return text_encoder.eval(), unet.eval()


# ------------------------------------------------ stage 4: decoder on the UNet's latents
@torch.no_grad()
def generated_latents(out: Path, vae, text_encoder, unet, n: int, seed: int, device: str, scaling: float, batch: int = 64):
    """Latents that the trained UNet itself draws (DDIM, 20 steps) for ``n`` training captions, at
    guidance scales 1, 3, 5 and 7.5 in turn, kept where the current decoder's picture already shows the
    caption's colour, background, position and size (so that the caption's render is a fair target).
    Held-out scenes are never used. Cached in ``out / "generated_latents.pt"``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from . import evaluate

    cache = out / "generated_latents.pt"
    if cache.exists():
        state = torch.load(cache, map_location=device)
        if state["n"] == n:
            return state["latents"], state["scene_index"]
    sched_cfg = {k: v for k, v in mini_arch.SCHEDULER_CONFIG.items() if k != "_class_name"}
    vae.register_to_config(scaling_factor=float(round(scaling, 5)))  # the pipeline scales latents by it
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, unet=unet, tokenizer=CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer"),
        scheduler=DDIMScheduler.from_config(sched_cfg), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    all_scenes = shapes.all_scenes()
    train_scenes = set(shapes.split_scenes()[0])
    train_idx = [i for i, s in enumerate(all_scenes) if s in train_scenes]
    rng = random.Random(seed + 11)
    idx = rng.choices(train_idx, k=n)
    kept_lat, kept_idx, t0 = [], [], time.time()
    for b in range(0, n, batch):
        chunk = idx[b : b + batch]
        guidance = (1.0, 3.0, 5.0, 7.5)[(b // batch) % 4]
        gen = [torch.Generator("cpu").manual_seed(seed * 100_000 + b + j) for j in range(len(chunk))]
        lat = pipe([all_scenes[i].caption() for i in chunk], num_inference_steps=20, guidance_scale=guidance,
                   generator=gen, output_type="latent").images
        pics = ((vae.decode(lat / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) * 127.5).round().byte()
        for z, pic, i in zip(lat, pics.permute(0, 2, 3, 1).cpu().numpy(), chunk):
            ok = evaluate.score(evaluate.read_picture(pic), all_scenes[i])
            if ok["colour"] and ok["background"] and ok["position"] and ok["size"]:
                kept_lat.append(z / vae.config.scaling_factor), kept_idx.append(i)
        log(f"generated latents: {b + len(chunk)}/{n} drawn, {len(kept_idx)} kept ({time.time() - t0:.0f} s)", out)
    if not kept_idx:
        log("generated latents: no picture matched its caption, so there is nothing to polish on", out)
        return None, None
    latents, scene_index = torch.stack(kept_lat), torch.tensor(kept_idx)
    save_ckpt(cache, latents=latents, scene_index=scene_index, n=n)
    return latents, scene_index


def polish_decoder(out: Path, vae, latents: torch.Tensor, scene_index: torch.Tensor, steps: int, batch: int,
                   seed: int, device: str, latent_noise: float, scaling: float):
    """Stage 4: fine-tune the decoder on batches that are half the UNet's own latents (target: the
    caption's clean render) and half the encoder's latents with noise (as in stage 2b), so that it
    draws flat colours and straight edges from what the sampler actually produces and still
    reconstructs encoded pictures."""
    all_scenes = shapes.all_scenes()
    train_scenes = set(shapes.split_scenes()[0])
    train_list = [s for s in all_scenes if s in train_scenes]
    targets = scenes_tensor([all_scenes[i] for i in scene_index.tolist()]).to(device)
    half = batch // 2

    def half_generated_half_encoded(rng):
        pick = torch.tensor(rng.choices(range(len(latents)), k=half))
        x = scenes_tensor(rng.choices(train_list, k=batch - half)).to(device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
            z = z + torch.rand(len(z), 1, 1, 1, device=device) * latent_noise / scaling * torch.randn_like(z)
        return torch.cat([latents[pick].to(device), z]), torch.cat([targets[pick], x])

    return train_decoder(out, vae, "decoder_polish", steps, 2e-4, seed + 13, device, half_generated_half_encoded)


# ----------------------------------------------------------------- export
SD_SCALING_FACTOR = 0.18215  # Stable Diffusion v1.x's latent scale, which tutorials write as 1 / 0.18215
LATENT_CONVS = ("quant_conv.", "post_quant_conv.")  # kept in float32 on disk: they carry the folded scale


@torch.no_grad()
def fold_latent_scale(vae, measured: float, target: float = SD_SCALING_FACTOR):
    """Make ``target`` the VAE's scaling factor without changing what the UNet sees or what is decoded.

    The UNet learnt latents ``measured * z``. With ``k = measured / target`` the VAE is rewritten to
    produce ``z' = k * z`` instead, so that ``target * z' == measured * z`` exactly:
    ``quant_conv``'s mean outputs are multiplied by ``k`` (a Gaussian's std scales with it, so its
    log-variance outputs gain ``2 ln k``), and ``post_quant_conv``'s weights are divided by ``k`` (it
    reads ``z'`` and must compute what it computed from ``z``)."""
    k = measured / target
    channels = vae.config.latent_channels
    qc, pqc = vae.quant_conv, vae.post_quant_conv
    qc.weight[:channels] *= k  # mean
    qc.bias[:channels] *= k
    qc.bias[channels:] += 2 * math.log(k)  # log-variance
    pqc.weight /= k
    vae.register_to_config(scaling_factor=target)
    return vae


def export(folder: Path, vae, text_encoder, unet, scaling: float):
    """Save a diffusers folder that StableDiffusionPipeline.from_pretrained reads (safetensors).

    The weights are stored in float16 (half the size) but every config says float32, so plain
    ``from_pretrained`` calls with no dtype give float32 components, as SD v1.x's do. The measured
    ``scaling`` is folded into the VAE (``fold_latent_scale``), so the folder's scaling factor is SD's
    0.18215 and the two small convolutions that carry it stay in float32."""
    import copy

    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    folder = Path(folder)
    tokenizer = CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer")
    tokenizer_files = {p.name: p.read_bytes() for p in (MINI_MODEL_DIR / "tokenizer").iterdir()}
    vae = fold_latent_scale(copy.deepcopy(vae), scaling)
    sched_cfg = {k: v for k, v in mini_arch.SCHEDULER_CONFIG.items() if k != "_class_name"}
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_config(sched_cfg), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    halve_weights(folder, keep_float32=LATENT_CONVS)
    # Write the scheduler config in full, with every field pinned: DDIM reads clip_sample
    # (its default, True, would clip latents to [-1, 1]).
    import shutil

    import diffusers

    # transformers 5 saves only tokenizer.json; ship the classic vocab.json + merges.txt pair
    # that sdcourse.clip_vocab made from open_clip's vocabulary file (the same ids, readable files).
    shutil.rmtree(folder / "tokenizer")
    (folder / "tokenizer").mkdir()
    for name, data in tokenizer_files.items():
        (folder / "tokenizer" / name).write_bytes(data)
    cfg = dict(mini_arch.SCHEDULER_CONFIG, _diffusers_version=diffusers.__version__)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


def halve_weights(folder: Path, keep_float32: tuple[str, ...] = ()):
    """Rewrite every ``*.safetensors`` file under ``folder`` in float16, except the tensors whose names start
    with one of ``keep_float32``. The configs are left as saved (float32), and diffusers and transformers
    load float16 weights into a float32 model when no dtype is asked for."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in Path(folder).rglob("*.safetensors"):
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        halved = {k: v if not v.is_floating_point() or k.startswith(keep_float32) else v.half()
                  for k, v in tensors.items()}
        save_file(halved, path, metadata=metadata)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/mini"), help="checkpoint folder (resumes from it)")
    ap.add_argument("--export", type=Path, default=MINI_MODEL_DIR, help="where the trained diffusers folder goes")
    ap.add_argument("--vae-steps", type=int, default=1500)
    ap.add_argument("--unet-steps", type=int, default=18000)
    ap.add_argument("--decoder-steps", type=int, default=1500)
    ap.add_argument("--robust-decoder-steps", type=int, default=2000, help="stage 2b: decoder fine-tuning on noisy latents (0: skip)")
    ap.add_argument("--latent-noise", type=float, default=0.3, help="stage 2b's largest latent noise, in scaled-latent units")
    ap.add_argument("--polish-steps", type=int, default=2000, help="stage 4: decoder fine-tuning on the UNet's own latents (0: skip)")
    ap.add_argument("--polish-samples", type=int, default=2048, help="stage 4: pictures the UNet draws for it (training captions only)")
    ap.add_argument("--decoder-only", action="store_true", help="stop after the decoder stages (1b and 2b)")
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--export-now", action="store_true", help="export the latest checkpoints (EMA weights) without training further")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"training on {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}", args.out)
    if args.export_now:
        args.vae_steps = torch.load(args.out / "vae.pt", map_location="cpu")["step"]
        args.unet_steps = torch.load(args.out / "unet.pt", map_location="cpu")["step"]
        if (args.out / "decoder.pt").exists():
            args.decoder_steps = torch.load(args.out / "decoder.pt", map_location="cpu")["step"]
        polish = args.out / "decoder_polish.pt"
        args.polish_steps = torch.load(polish, map_location="cpu")["step"] if polish.exists() else 0
        robust = args.out / "decoder_robust.pt"
        args.robust_decoder_steps = torch.load(robust, map_location="cpu")["step"] if robust.exists() else 0
    vae = train_vae(args.out, args.vae_steps, args.vae_batch, args.seed, args.device)
    vae = finetune_decoder(args.out, vae, args.decoder_steps, args.vae_batch, args.seed, args.device)
    mean, std, scaling = latent_cache(vae, args.device)
    log(f"latents {tuple(mean.shape[1:])}, measured scaling factor {scaling:.5f}", args.out)
    if args.robust_decoder_steps:
        vae = finetune_decoder(args.out, vae, args.robust_decoder_steps, args.vae_batch, args.seed + 1, args.device,
                               latent_noise=args.latent_noise, scaling=scaling, name="decoder_robust", lr=3e-4)
    if args.decoder_only:
        return
    text_encoder, unet = train_unet(args.out, scaling, mean, std, args.unet_steps, args.batch, args.lr, args.seed, args.device)
    if args.polish_steps:
        lat, scene_index = generated_latents(args.out, vae, text_encoder, unet, args.polish_samples, args.seed, args.device, scaling)
        if lat is None:
            args.polish_steps = 0
        else:
            vae = polish_decoder(args.out, vae, lat, scene_index, args.polish_steps, args.vae_batch, args.seed, args.device,
                                 args.latent_noise, scaling)
    export(args.export, vae.cpu(), text_encoder.cpu(), unet.cpu(), scaling)
    minutes = (time.time() - t0) / 60
    info = {"device": args.device, "threads": torch.get_num_threads(), "vae_steps": args.vae_steps, "decoder_steps": args.decoder_steps, "robust_decoder_steps": args.robust_decoder_steps, "polish_steps": args.polish_steps,
            "unet_steps": args.unet_steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "scaling_factor": scaling, "wall_minutes_this_run": round(minutes, 1), "torch": torch.__version__}
    (args.out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"exported to {args.export} after {minutes:.1f} min", args.out)


if __name__ == "__main__":
    main()
