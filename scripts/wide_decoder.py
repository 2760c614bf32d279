"""Is the mini model's shape ceiling its decoder or its latents? Train a wider decoder on the shipped encoder's latents.

The shipped ``AutoencoderKL`` (16/32/64/64 channels, one layer per block) reads the shape right on about 86% of
its round trips of flat renders and 61-80% of varied ones. This script keeps the shipped encoder frozen (so the
latents, and the UNet trained on them, stay as they are) and trains a wider decoder from scratch on its latents of
flat and varied renders, half of each batch each:

    python scripts/wide_decoder.py --out ~/.cache/sdcourse-runs/wide-decoder

Stage "clean" decodes the posterior's samples; stage "robust" adds Gaussian noise of a random strength up to
``--latent-noise`` (scaled-latent units) first, as the shipped recipe's stage 4 does, so that the decoder
forgives the UNet's small errors. Checkpoints every 100 steps in ``--out``; rerunning resumes. At the end it
prints the checker's readings of the round trips (shipped encoder, this decoder) of 200 held-out scenes, flat and
varied, beside the shipped decoder's, and writes them to ``--out/round_trips.json``.

``--encoder-steps N`` then makes the wider decoder a whole ``AutoencoderKL`` that the shipped UNet can use: a
third stage trains the wide VAE's own encoder (its ``quant_conv`` included) to reproduce the shipped encoder's
posterior, mean and log-variance, in scaled-latent units, on the same mixed batches. The round trips are then
read through the wide VAE alone, and ``--export DIR`` writes a model folder with it, the text encoder and UNet of
``--unet-from`` (default: the shipped ones) and, with ``--sd-scheduler``, Stable Diffusion v1-4's scheduler file.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

WIDE = dict(block_out_channels=(32, 64, 128, 128), layers_per_block=2, norm_num_groups=16)


def wide_vae(seed: int = 0, **changes):
    """A fresh ``AutoencoderKL`` of the mini model's kind (x8, 4 latent channels, 64 px) with ``WIDE``'s blocks."""
    from diffusers import AutoencoderKL

    from sdcourse.mini import arch

    torch.manual_seed(seed)
    return AutoencoderKL(**{**arch.VAE_CONFIG, **WIDE, **changes})


def mixed_batch(rng: random.Random, scenes: list, k: int) -> torch.Tensor:
    """``k`` pictures of random scenes: the first half flat renders, the rest each with a random ``shapes.Look``."""
    from sdcourse import shapes
    from sdcourse.mini.train import scenes_tensor

    picks = rng.choices(scenes, k=k)
    looks = [None] * (k // 2) + [shapes.random_look(rng) for _ in range(k - k // 2)]
    return scenes_tensor(picks, looks=looks)


@torch.no_grad()
def round_trips(encoder_vae, decoder_vae, n: int = 200) -> dict:
    """The checker's readings of ``decoder_vae.decode(encoder_vae.encode(x).mean)`` for the held-out scenes'
    flat and varied renders (``evaluate.round_trip_readings``, the pictures of ``evaluate.vae_round_trip``)."""
    from sdcourse.mini.evaluate import round_trip_readings

    return {world: round_trip_readings(encoder_vae, decoder_vae, n, varied=world == "varied")
            for world in ("flat", "varied")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder (resumes from it)")
    ap.add_argument("--clean-steps", type=int, default=2500)
    ap.add_argument("--robust-steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the clean stage (robust: 0.3x)")
    ap.add_argument("--latent-noise", type=float, default=0.3)
    ap.add_argument("--subject-weight", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encoder-steps", type=int, default=0, help="then train the wide encoder this many steps")
    ap.add_argument("--encoder-lr", type=float, default=1e-3)
    ap.add_argument("--export", type=Path, default=None, help="write a model folder with the wide VAE here")
    ap.add_argument("--unet-from", type=Path, default=None, help="the folder whose text encoder and UNet to export")
    ap.add_argument("--sd-scheduler", action="store_true", help="export Stable Diffusion v1-4's scheduler config")
    ap.add_argument("--measure-only", action="store_true", help="only print the round trips of the last checkpoint")
    ap.add_argument("-n", type=int, default=200, help="held-out scenes whose round trips are read (default 200)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL

    from sdcourse import MINI_MODEL_DIR, shapes
    from sdcourse.mini import train

    args.out.mkdir(parents=True, exist_ok=True)
    shipped = AutoencoderKL.from_pretrained(MINI_MODEL_DIR / "vae", dtype=torch.float32).eval().requires_grad_(False)
    scaling = shipped.config.scaling_factor
    wide = wide_vae()
    params = train.decoder_params(wide)
    print(f"wide decoder: {sum(p.numel() for p in params) / 1e6:.2f}M parameters "
          f"(shipped: {sum(p.numel() for p in train.decoder_params(shipped)) / 1e6:.2f}M)", flush=True)
    recipe = train.Recipe(subject_weight=args.subject_weight)
    scenes = [shapes.all_scenes()[i] for i in train.training_scene_indices()]
    for name, steps, lr, noise in (("clean", args.clean_steps, args.lr, 0.0),
                                   ("robust", args.robust_steps, 0.3 * args.lr, args.latent_noise)):
        ckpt = args.out / f"{name}.pt"
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        start = train.resume(ckpt, wide, opt, steps, name, args.out, "cpu")
        if start >= steps or args.measure_only:
            continue
        rng = random.Random(1000 * (name == "robust") + start)
        torch.manual_seed(1000 * (name == "robust") + start)
        t0 = time.time()
        wide.train()
        with train.checkpoint_on_interrupt() as interrupted:
            for step in range(start, steps):
                train.set_lr(opt, train.lr_at(step, steps, lr, 50, 0.1))
                x = mixed_batch(rng, scenes, args.batch)
                z = train.encode_with_noise(shipped, x, noise, scaling)
                loss, _ = train.decoder_loss(wide, z, x, recipe)
                train.optimiser_step(opt, loss, params, 1.0)
                save = lambda: train.save_ckpt(ckpt, model=wide.state_dict(), opt=opt.state_dict(), step=step + 1)
                if (step + 1) % 100 == 0 or step + 1 == steps:
                    rate = (step + 1 - start) / (time.time() - t0)
                    train.log(f"{name} step {step + 1}/{steps} loss {loss.item():.4f} ({rate:.2f} steps/s)", args.out)
                    save()
                train.stop_if_asked(interrupted, save, args.out, name, step + 1)
        wide.eval()
    if args.encoder_steps and not args.measure_only:
        fit_encoder(args, wide, shipped, scaling, scenes)
    wide.eval().requires_grad_(False)
    encoder = wide if args.encoder_steps else shipped
    result = {"wide": round_trips(encoder, wide, args.n), "shipped": round_trips(shipped, shipped, args.n)}
    if args.encoder_steps:
        result["latent_error"] = latent_error(wide, shipped, scaling, args.n)
        train.log(f"wide encoder against the shipped one, held-out scenes: {result['latent_error']}", args.out)
    for which, rows in result.items():
        for world, row in rows.items() if which != "latent_error" else ():
            train.log(f"{which} {'VAE' if which == 'wide' and args.encoder_steps else 'decoder'}, {world} renders: "
                      + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row.items()), args.out)
    (args.out / "round_trips.json").write_text(json.dumps(result, indent=1) + "\n")
    torch.save(wide.state_dict(), args.out / "wide_vae.pt")
    if args.export:
        export(args, wide, scaling)


def fit_encoder(args, wide, shipped, scaling: float, scenes: list) -> None:
    """Train ``wide``'s encoder and ``quant_conv`` to give the shipped encoder's posterior (mean and
    log-variance, the mean in scaled-latent units), so that the latents the UNet learnt stay what they were."""
    from sdcourse.mini import train

    params = list(wide.encoder.parameters()) + list(wide.quant_conv.parameters())
    ckpt = args.out / "encoder.pt"
    opt = torch.optim.AdamW(params, lr=args.encoder_lr, weight_decay=0.0)
    start = train.resume(ckpt, wide, opt, args.encoder_steps, "encoder", args.out, "cpu")
    if start >= args.encoder_steps:
        return
    wide.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    rng = random.Random(2000 + start)
    t0 = time.time()
    with train.checkpoint_on_interrupt() as interrupted:
        for step in range(start, args.encoder_steps):
            train.set_lr(opt, train.lr_at(step, args.encoder_steps, args.encoder_lr, 50, 0.1))
            x = mixed_batch(rng, scenes, args.batch)
            with torch.no_grad():
                want = shipped.encode(x).latent_dist
            got = wide.encode(x).latent_dist
            mean_err = ((got.mean - want.mean) * scaling).square().mean()
            loss = mean_err + 0.1 * (got.logvar - want.logvar).square().mean()
            train.optimiser_step(opt, loss, params, 1.0)
            save = lambda: train.save_ckpt(ckpt, model=wide.state_dict(), opt=opt.state_dict(), step=step + 1)
            if (step + 1) % 100 == 0 or step + 1 == args.encoder_steps:
                rate = (step + 1 - start) / (time.time() - t0)
                train.log(f"encoder step {step + 1}/{args.encoder_steps} loss {loss.item():.5f} (mean's RMS error "
                          f"{mean_err.sqrt().item():.4f} in scaled units; {rate:.2f} steps/s)", args.out)
                save()
            train.stop_if_asked(interrupted, save, args.out, "encoder", step + 1)


@torch.no_grad()
def latent_error(wide, shipped, scaling: float, n: int = 200) -> dict:
    """How far the wide encoder's posterior means are from the shipped one's, in scaled-latent units (where the
    latents' spread is about 1), on the held-out scenes' flat and varied renders."""
    from sdcourse import shapes
    from sdcourse.mini.evaluate import heldout_prompts
    from sdcourse.mini.train import scenes_tensor

    scenes = [s for s, _ in heldout_prompts(n)]
    rng = random.Random(1)
    out = {}
    for world, looks in (("flat", None), ("varied", [shapes.random_look(rng) for _ in scenes])):
        x = scenes_tensor(scenes, looks=looks)
        a, b = wide.encode(x).latent_dist.mean * scaling, shipped.encode(x).latent_dist.mean * scaling
        out[world] = {"rms_error": round((a - b).square().mean().sqrt().item(), 4),
                      "latent_std": round(b.std().item(), 4)}
    return out


def export(args, wide, scaling: float) -> None:
    """A model folder: the wide VAE, the text encoder and UNet of ``--unet-from``, the lineage beside them."""
    import platform

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from sdcourse import MINI_MODEL_DIR
    from sdcourse.mini import train

    unet_from = args.unet_from or MINI_MODEL_DIR
    text_encoder = CLIPTextModel.from_pretrained(unet_from / "text_encoder", dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(unet_from / "unet", dtype=torch.float32)
    info = unet_from / "train_info.json"
    lineage = json.loads(info.read_text()) if info.exists() else {}
    stage = {"record": "scripts/wide_decoder.py: a wider AutoencoderKL (" + json.dumps(WIDE) + "); its decoder "
                       "trained on the shipped encoder's latents, then its encoder to reproduce them",
             **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
             "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    train.export(args.export, wide, text_encoder, unet, scaling, {**lineage, "stages": [*lineage.get("stages", []), stage]})
    if args.sd_scheduler:
        from sdcourse.standin import write_sd14_scheduler

        write_sd14_scheduler(args.export)
    train.log(f"exported to {args.export}", args.out)


if __name__ == "__main__":
    main()
