"""Fine-tune a mini model's VAE decoder on the varied world, its encoder frozen, and export a model folder.

The encoder does not change, so the latents do not either: the UNet that was trained on them (the one in
``--from-model``, or the one in ``--unet-from``) stays valid, and this stage can run before, after or apart
from the UNet's. It runs the recipe's stages 2 and 4 (``sdcourse.mini.train.train_decoder``) on pictures with
a random ``shapes.Look`` each, starting from the folder's decoder:

    python scripts/fit_decoder.py --out ~/.cache/sdcourse-runs/decoder --subject-weight 4 \\
        --unet-from ~/.cache/sdcourse-runs/v2-unet/model --export ~/.cache/sdcourse-runs/v2a

Checkpoints go to ``--out`` every 100 steps; rerunning the command resumes from them. The exported folder has
the text encoder and UNet of ``--unet-from`` (default: ``--from-model``), the new VAE, the tokenizer, Stable
Diffusion v1-4's own scheduler config (``--sd-scheduler``) or the mini model's, and a ``train_info.json``
with this stage's record added to the UNet folder's lineage.
"""
import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder (resumes from it)")
    ap.add_argument("--export", type=Path, required=True, help="where the model folder goes")
    ap.add_argument("--from-model", type=Path, default=None, help="the folder whose VAE to start from (default: the shipped one)")
    ap.add_argument("--unet-from", type=Path, default=None, help="the folder whose text encoder and UNet to export with it")
    ap.add_argument("--steps", type=int, default=1500, help="decoder steps on clean latents (stage 2)")
    ap.add_argument("--robust-steps", type=int, default=2000, help="decoder steps on noisy latents (stage 4)")
    ap.add_argument("--subject-weight", type=float, default=4.0, help="the shape's pixels count 1 + this many times")
    ap.add_argument("--look-strength", type=float, default=1.0, help="how far the looks vary, 0-1")
    ap.add_argument("--sd-scheduler", action="store_true", help="export Stable Diffusion v1-4's scheduler config")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps < 0 or args.robust_steps < 0 or args.steps + args.robust_steps == 0:
        ap.error(f"--steps and --robust-steps must be 0 or more and not both 0, got {args.steps} and {args.robust_steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from sdcourse import MINI_MODEL_DIR
    from sdcourse.mini import train
    source, unet_from = args.from_model or MINI_MODEL_DIR, args.unet_from or args.from_model or MINI_MODEL_DIR
    for name, folder in (("--from-model", source), ("--unet-from", unet_from)):
        if not (folder / "unet").is_dir() or not (folder / "vae").is_dir():
            ap.error(f"{name} {folder}: not a diffusers model folder (no unet/ or vae/ in it)")
    try:
        recipe = train.Recipe(looks_per_scene=1, look_strength=args.look_strength, polish_steps=0,
                              decoder_steps=args.steps, robust_decoder_steps=args.robust_steps,
                              subject_weight=args.subject_weight)
    except ValueError as err:
        ap.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    vae = AutoencoderKL.from_pretrained(source / "vae", dtype=torch.float32)
    scaling = vae.config.scaling_factor  # the folder's VAE carries its scale folded in (train.fold_latent_scale)
    t0 = time.time()
    train.log(f"decoder of {source} on the varied world, subject weight {args.subject_weight}, "
              f"{torch.get_num_threads()} threads", args.out)
    if args.steps:
        vae = train.train_decoder(args.out, vae, recipe, "cpu")
    if args.robust_steps:
        vae = train.train_decoder(args.out, vae, recipe, "cpu", robust=True, scaling=scaling)
    minutes = round((time.time() - t0) / 60, 1)
    text_encoder = CLIPTextModel.from_pretrained(unet_from / "text_encoder", dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(unet_from / "unet", dtype=torch.float32)
    info = unet_from / "train_info.json"
    lineage = json.loads(info.read_text()) if info.exists() else {}
    stage = {"record": f"scripts/fit_decoder.py: stages 2 and 4 on the varied world from the VAE of {source.name}, "
                       f"its encoder frozen",
             **{k: v for k, v in asdict(recipe).items() if k.startswith(("decoder", "robust", "latent", "vae_batch",
                                                                           "subject", "look", "grad", "lr_floor"))},
             "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
             "torch": torch.__version__, "minutes_this_run": minutes}
    record = {**lineage, "stages": [*lineage.get("stages", []), stage]}
    train.export(args.export, vae, text_encoder, unet, scaling, record)  # scaling is already SD's: no refold
    if args.sd_scheduler:
        from sdcourse.standin import write_sd14_scheduler

        write_sd14_scheduler(args.export)
    train.log(f"exported to {args.export} ({minutes} min of decoder training)", args.out)


if __name__ == "__main__":
    main()
