"""How stiff does the shapes world itself make guided sampling? The ideal denoiser's eigenvalues.

A trained UNet approximates the best possible denoiser of its training data. For the mini model's world that
denoiser can be written down exactly: the data are the 1,680 scenes' latents (the model's own VAE encoder,
posterior means, times the scaling factor), and the best guess of the clean latents is their posterior mean
(``sdcourse.stiffness.ideal_jacobian``). This script measures the most negative eigenvalue of dD/dx for the
ideal *guided* denoiser, at ``x = a scene's latents + sigma * noise``, for full captions (which settle the
scene) and short prompts (colour and shape only), and prints the mean and median over the points::

    python scripts/ideal_stiffness.py --model mini --guidance 2 7.5 --sigma 0.5 1 2 -n 32

Compare it with the trained model's eigenvalue (``python -m sdcourse.stiffness``): if the ideal denoiser is as
stiff as the trained one, no training recipe can make K-LMS stable at that guidance in this world; the world
(what its captions leave open) has to change.
"""
import argparse

import numpy as np
import torch


def scene_latents(vae, scenes, resolution: int) -> np.ndarray:
    """The scaled posterior-mean latents of ``scenes``' renders, flattened: (n, 4 * h * w), float64."""
    from sdcourse.mini.train import scenes_tensor

    out = []
    with torch.no_grad():
        for i in range(0, len(scenes), 256):
            x = scenes_tensor(scenes[i : i + 256], resolution)
            out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out).flatten(1).double().numpy()


def prompt_log_prior(scenes, scene, short: bool) -> np.ndarray:
    """0 for the scenes a prompt allows, -inf for the others: the full caption allows only ``scene``,
    the short prompt ("a red circle") every scene of that colour and shape."""
    if short:
        allowed = [s.colour == scene.colour and s.shape == scene.shape for s in scenes]
    else:
        allowed = [s == scene for s in scenes]
    return np.where(allowed, 0.0, -np.inf)


def ideal_table(points: np.ndarray, scenes, guidances, sigmas, n: int = 32, seed: int = 0) -> dict:
    """{(short, guidance, sigma): (mean, median)} of the ideal guided denoiser's most negative eigenvalue at
    ``n`` points (a random scene's latents + sigma * noise; the same points for every guidance scale)."""
    from sdcourse.stiffness import ideal_guided_eigenvalue

    table = {}
    for short in (False, True):
        for g in guidances:
            for sigma in sigmas:
                rng = np.random.default_rng(seed)
                values = []
                for _ in range(n):
                    i = int(rng.integers(len(scenes)))
                    x = points[i] + sigma * rng.standard_normal(points.shape[1])
                    prior = prompt_log_prior(scenes, scenes[i], short)
                    values.append(ideal_guided_eigenvalue(points, x, sigma, prior, g))
                table[short, g, sigma] = (float(np.mean(values)), float(np.median(values)))
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help='"mini" (default) or a diffusers folder')
    ap.add_argument("--guidance", nargs="+", type=float, default=[2.0, 7.5])
    ap.add_argument("--sigma", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    ap.add_argument("-n", type=int, default=32, help="points (a scene and a noise draw each) per cell")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from diffusers import AutoencoderKL

    from sdcourse import shapes
    from sdcourse.loader import MINI_MODEL_DIR

    folder = MINI_MODEL_DIR if args.model == "mini" else args.model
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
    scenes = shapes.all_scenes()
    points = scene_latents(vae, scenes, vae.config.sample_size)
    table = ideal_table(points, scenes, args.guidance, args.sigma, args.n, args.seed)
    print(f"{len(points)} scenes, latents of {points.shape[1]} numbers; ideal guided denoiser's most negative "
          f"eigenvalue of dD/dx, mean (median) over {args.n} points")
    print(f"{'prompts':14} {'guidance':>8} " + " ".join(f"{f'sigma {s:g}':>16}" for s in args.sigma))
    for short in (False, True):
        for g in args.guidance:
            cells = [f"{table[short, g, s][0]:7.2f} ({table[short, g, s][1]:5.2f})" for s in args.sigma]
            print(f"{'short prompts' if short else 'full captions':14} {g:8g} " + " ".join(f"{c:>16}" for c in cells))
    return table


if __name__ == "__main__":
    main()
