"""How much of a picture's shape do a VAE's latents hold? A small classifier reads the shape off the latents alone.

If a classifier trained on the encoder's latents (4 x 8 x 8 for the mini model) names the shape of held-out
scenes almost always, the shape is in the latents and a better decoder can draw it; if it cannot, no decoder
can, and the latent space itself must change. It trains on the posterior means of the training scenes' flat
renders and of ``--looks`` varied renders of each, and reads the held-out scenes' flat and varied renders:

    python scripts/latent_probe.py                     # the bundled model's VAE
    python scripts/latent_probe.py --model DIR         # another model folder's, or a VAE folder's

It prints the shape accuracy on held-out scenes, by world (flat, varied) and by size (small, large).
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
import torch.nn.functional as F


@torch.no_grad()
def encode(vae, scenes: list, looks: list | None) -> torch.Tensor:
    from sdcourse.mini.train import scenes_tensor

    out = []
    for i in range(0, len(scenes), 256):
        x = scenes_tensor(scenes[i : i + 256], looks=looks[i : i + 256] if looks else None)
        out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def probe(latent_channels: int = 4, width: int = 64) -> torch.nn.Module:
    """A small convolutional classifier: latents in, one score per shape out."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(latent_channels, width, 3, padding=1), torch.nn.SiLU(),
        torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU(),
        torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU(),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="a model folder, or a VAE's own folder (default: the bundled mini model)")
    ap.add_argument("--looks", type=int, default=8, help="varied renders of each training scene (default 8)")
    ap.add_argument("--steps", type=int, default=3000, help="classifier training steps (default 3000)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL

    from sdcourse import MINI_MODEL_DIR, shapes

    folder = args.model or MINI_MODEL_DIR
    vae = AutoencoderKL.from_pretrained(folder / "vae" if (folder / "vae").is_dir() else folder).eval()
    train_scenes, held = shapes.split_scenes()
    rng = random.Random(0)
    varied = [s for s in train_scenes for _ in range(args.looks)]
    x = torch.cat([encode(vae, list(train_scenes), None), encode(vae, varied, [shapes.random_look(rng) for _ in varied])])
    y = torch.tensor([shapes.SHAPES.index(s.shape) for s in [*train_scenes, *varied]])
    test = {"flat": encode(vae, list(held), None),
            "varied": encode(vae, list(held), [shapes.random_look(random.Random(1)) for _ in held])}
    y_test = torch.tensor([shapes.SHAPES.index(s.shape) for s in held])
    torch.manual_seed(0)
    net = probe(x.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for step in range(args.steps):
        pick = torch.randint(0, len(x), (128,))
        loss = F.cross_entropy(net(x[pick]), y[pick])
        opt.zero_grad(), loss.backward(), opt.step()
    net.eval()
    print(f"{len(x)} training latents ({len(train_scenes)} scenes, flat and {args.looks} varied renders each); "
          f"{len(held)} held-out scenes; final training loss {loss.item():.3f}")
    with torch.no_grad():
        for world, lat in test.items():
            right = net(lat).argmax(1) == y_test
            by_size = {size: right[torch.tensor([s.size == size for s in held])].float().mean().item()
                       for size in shapes.SIZES}
            print(f"{world} renders: shape read from the latents {100 * right.float().mean():.1f}% "
                  f"(" + ", ".join(f"{k} {100 * v:.1f}%" for k, v in by_size.items()) + ")")


if __name__ == "__main__":
    main()
