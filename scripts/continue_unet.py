"""Train the shipped mini model's text encoder and UNet for more steps, keeping its VAE.

``python -m sdcourse.mini.train`` resumes from its own checkpoint folder (weights, optimizer state, EMA).
When that folder is gone, this script seeds a new one from the weights in ``sdcourse/mini_model``
(a fresh AdamW state, the EMA starting at the shipped weights) and goes on with the same loop, loss,
learning-rate schedule and data as stage 5 of the recipe. The VAE and its scaling factor stay as
shipped (the latents are recomputed from its encoder), and the result is exported as a diffusers folder.

    python scripts/continue_unet.py --out runs/more --from-step 12000 --steps 18000 --threads 2

The shipped 18,000-step weights were made by this command from the 12,000-step weights of commit 9ac335f.
Rerunning it resumes from ``--out``'s checkpoint (saved every 500 steps).

``--looks-per-scene 16`` goes on in the varied world instead (``shapes.Look``; the UNet's latents are 16
pictures of every scene, each with a random look, encoded by the shipped VAE): the measured try of the model
card's "Stiffness" section, which makes guided sampling at 7.5 much less stiff::

    python scripts/continue_unet.py --out runs/varied --from-step 18000 --steps 28000 --looks-per-scene 16

``--smooth-weight W --smooth-steps N`` adds the guidance-smoothness penalty of ``train.denoise_and_smoothness``
for the last N steps. The model card's try of it went on from the varied-world weights above for 400 steps at
a constant learning rate (``--lr 2e-4 --constant-lr``) with a faster EMA (``--ema-decay 0.995``)::

    python scripts/continue_unet.py --from-model runs/varied/model --out runs/smooth03 --from-step 28000 \
        --steps 28400 --looks-per-scene 16 --lr 2e-4 --constant-lr --ema-decay 0.995 \
        --smooth-weight 0.3 --smooth-steps 400

``--export-now`` trains no further and exports the checkpoint in ``--out`` as it is (a stage that stops before
``--steps``, to be committed and gone on with later), with the VAE of ``--vae`` (``--export`` names the folder).

``--vae FOLDER`` trains on the latents of another autoencoder (a stage saved by ``scripts/save_vae_stage.py``),
with their measured scaling factor, which the export folds into that VAE so that its config reads SD's 0.18215.
The text encoder and UNet still start from ``--from-model``'s weights; ``--from-step 0`` gives them a fresh
warm-up and a whole cosine schedule. Version 2's text encoder and UNet on the wider autoencoder::

    python scripts/continue_unet.py --vae checkpoints/v2/vae --out ~/.cache/sdcourse-runs/v2-unet2 \
        --from-step 0 --steps 12000 --looks-per-scene 16 --threads 2

The exported folder gets a ``train_info.json``: the recipe, the starting step, the machine and the minutes.
"""
import argparse
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder; the model goes to OUT/model")
    ap.add_argument("--from-step", type=int, required=True, help="how many steps the shipped UNet has had")
    ap.add_argument("--steps", type=int, required=True, help="train until this step (the cosine schedule's length)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--looks-per-scene", type=int, default=0, help="0: the flat world; N: N varied pictures per scene")
    ap.add_argument("--look-strength", type=float, default=1.0, help="how far the looks vary, 0-1")
    ap.add_argument("--from-model", type=Path, default=None,
                    help="the diffusers folder whose text encoder, UNet and VAE to start from (default: the shipped one)")
    ap.add_argument("--vae", type=Path, default=None,
                    help="an AutoencoderKL folder whose latents to train on (default: --from-model's VAE)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    ap.add_argument("--constant-lr", action="store_true", help="keep the learning rate at its peak (no cosine)")
    ap.add_argument("--ema-decay", type=float, default=None, help="the EMA's decay (default: the recipe's)")
    ap.add_argument("--smooth-weight", type=float, default=0.0, help="the guidance-smoothness penalty's weight")
    ap.add_argument("--smooth-steps", type=int, default=0, help="the penalty is on for the last this many steps")
    ap.add_argument("--smooth-sigma-max", type=float, default=0.0,
                    help="take the penalty at the batch's clean latents noised to sigma <= this (0: at the batch)")
    ap.add_argument("--smooth-sigma-min", type=float, default=0.0,
                    help="with --smooth-sigma-max: noised to sigma >= this too (a band of noise levels)")
    ap.add_argument("--smooth-power-iters", type=int, default=0,
                    help="look along the direction the guidance stretches most, found by this many power steps "
                         "(0: a random direction)")
    ap.add_argument("--smooth-hinge", type=float, default=0.0,
                    help="penalise only each latent's stretch beyond this (0: all of it)")
    ap.add_argument("--export-now", action="store_true",
                    help="train no further: export the checkpoint in --out as it is (its EMA weights) with --vae's VAE")
    ap.add_argument("--export", type=Path, default=None, help="the exported folder (default: OUT/model)")
    args = ap.parse_args(argv)
    if args.steps <= args.from_step:
        ap.error(f"--steps ({args.steps}) must be larger than --from-step ({args.from_step})")
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from sdcourse import MINI_MODEL_DIR
    from sdcourse.mini import train
    model_dir = args.from_model or MINI_MODEL_DIR
    if not (model_dir / "unet").is_dir():
        ap.error(f"--from-model {model_dir}: not a diffusers folder (it has no unet/ folder)")
    vae_dir = args.vae or model_dir / "vae"
    if not (vae_dir / "config.json").is_file():
        ap.error(f"--vae {vae_dir}: not an AutoencoderKL folder (it has no config.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    vae = AutoencoderKL.from_pretrained(vae_dir, dtype=torch.float32).eval()
    scaling = vae.config.scaling_factor
    ckpt = args.out / "unet.pt"
    if args.export_now and not ckpt.exists():
        ap.error(f"--export-now: {ckpt} does not exist (nothing trained there yet)")
    if not ckpt.exists():
        text_encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder", dtype=torch.float32)
        unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", dtype=torch.float32)
        # weights and step only: train_unet starts a fresh optimizer and an EMA at these weights
        train.save_ckpt(ckpt, text_encoder=text_encoder.state_dict(), unet=unet.state_dict(), step=args.from_step)
        train.log(f"seeded {ckpt} from {model_dir.name} at step {args.from_step}", args.out)
    # the shipped recipe's stage 5, longer (in the varied world there is no decoder polish to follow)
    shipped = train.Recipe()
    try:
        recipe = train.Recipe(unet_steps=args.steps, seed=args.seed, looks_per_scene=args.looks_per_scene,
                              look_strength=args.look_strength,
                              polish_steps=0 if args.looks_per_scene else shipped.polish_steps,
                              unet_lr=args.lr or shipped.unet_lr, lr_floor=1.0 if args.constant_lr else shipped.lr_floor,
                              unet_warmup=0 if args.constant_lr else shipped.unet_warmup,
                              ema_decay=args.ema_decay or shipped.ema_decay, smooth_weight=args.smooth_weight,
                              smooth_steps=args.smooth_steps, smooth_sigma_max=args.smooth_sigma_max,
                              smooth_sigma_min=args.smooth_sigma_min, smooth_power_iters=args.smooth_power_iters,
                              smooth_hinge=args.smooth_hinge,
                              vae_width=vae.config.block_out_channels[0],
                              vae_layers=vae.config.layers_per_block)
    except ValueError as err:
        ap.error(str(err))
    t0 = time.time()
    with torch.no_grad():  # kept in OUT/latents.pt: a resumed run does not encode them again
        mean, std, measured, scene_of = train.cached_latents(args.out, vae, "cpu", recipe)
    if args.vae:  # a VAE that the UNet has never seen: its own latents' scale, folded in at the export
        train.log(f"{len(mean)} latents of {vae_dir}; measured scaling factor {measured:.5f}", args.out)
        scaling = measured
    else:
        train.log(f"{len(mean)} latents; scaling factor: shipped {scaling:.5f}, measured again {measured:.5f}",
                  args.out)
    reached = args.steps
    if args.export_now:  # a stage that stops before --steps: its checkpoint, exported as it is
        reached = train.load_ckpt(ckpt, "cpu")["step"]
        text_encoder, unet = train.train_unet(args.out, replace(recipe, unet_steps=reached), mean, std, scaling,
                                              "cpu", scene_of)
    else:
        text_encoder, unet = train.train_unet(args.out, recipe, mean, std, scaling, "cpu", scene_of)
    vae_said = f"the VAE of {vae_dir}, its scaling factor {scaling:.5f} folded in" if args.vae else "the VAE as it was"
    origin = "sdcourse/mini_model" if model_dir.resolve() == MINI_MODEL_DIR.resolve() else model_dir.name
    record = {"record": f"scripts/continue_unet.py: stage 5 of this recipe, from the weights of {origin} "
                        f"(trained {args.from_step} steps) to step {reached} of a schedule of {args.steps}; {vae_said}.",
              **asdict(recipe), "from_step": args.from_step, "step_reached": reached,
              "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "minutes_this_run": round((time.time() - t0) / 60, 1)}
    folder = args.export or args.out / "model"
    train.export(folder, vae, text_encoder, unet, scaling, record)
    train.log(f"exported step {reached} to {folder}", args.out)


if __name__ == "__main__":
    main()
