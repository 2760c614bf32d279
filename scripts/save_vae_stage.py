"""Save a VAE stage's checkpoint of ``python -m sdcourse.mini.train`` as a diffusers folder in float16, and read it.

A training's checkpoints live outside the repository (``--out``) and hold the optimiser's state too, several times
the weights' size. A later stage that must start on any machine needs only the weights:

    python scripts/save_vae_stage.py ~/.cache/sdcourse-runs/v2-vae/vae.pt checkpoints/v2/vae-stage1

writes ``AutoencoderKL.save_pretrained`` of the checkpoint's weights (the architecture from the run's
``recipe.json`` beside it) with the tensors in float16, and prints the checker's readings of its round trips of
200 held-out scenes, flat and varied, which it also writes to ``round_trips.json`` in the folder.
Load it with ``AutoencoderKL.from_pretrained(folder)`` (float32 by default).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path, help="a VAE stage's .pt file (vae.pt, decoder.pt, decoder_robust.pt)")
    ap.add_argument("folder", type=Path, help="where the diffusers folder goes")
    ap.add_argument("-n", type=int, default=200, help="held-out scenes whose round trips are read")
    args = ap.parse_args(argv)
    recipe_file = args.checkpoint.parent / "recipe.json"
    if not args.checkpoint.is_file() or not recipe_file.is_file():
        ap.error(f"{args.checkpoint}: no such checkpoint with a recipe.json beside it")
    from diffusers import AutoencoderKL

    from sdcourse.mini import arch, evaluate, train

    recipe = json.loads(recipe_file.read_text())
    state = train.load_ckpt(args.checkpoint, "cpu")
    vae = AutoencoderKL(**arch.vae_config(recipe.get("vae_width", 16), recipe.get("vae_layers", 1)))
    vae.load_state_dict(state["model"])
    vae.eval().requires_grad_(False)
    args.folder.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(args.folder, safe_serialization=True)
    train.halve_weights(args.folder)
    saved = AutoencoderKL.from_pretrained(args.folder).eval()  # what a later stage will load: the float16 weights
    result = {"checkpoint": args.checkpoint.name, "step": state["step"],
              **{world: evaluate.round_trip_readings(saved, saved, args.n, varied=world == "varied")
                 for world in ("flat", "varied")}}
    (args.folder / "round_trips.json").write_text(json.dumps(result, indent=1) + "\n")
    for world in ("flat", "varied"):
        print(f"{world} renders, round trips: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in result[world].items()))
    size = sum(p.stat().st_size for p in args.folder.rglob("*.safetensors"))
    print(f"saved {args.folder} (step {state['step']}, {size / 1e6:.1f} MB of float16 weights)")


if __name__ == "__main__":
    main()
