"""Does guidance make the mini model's pictures purer? Palette purity at several thresholds, guidance 7.5 vs 1.0.

The same 200 held-out captions and seeds as ``python -m sdcourse.mini.evaluate`` (DDIM, 20 steps); for each
threshold it prints the purity at both scales and the paired difference with its standard error.
The model card (``sdcourse/mini_model/README.md``) quotes its output.

    HF_HUB_OFFLINE=1 python scripts/purity_vs_guidance.py
"""
import numpy as np
import torch

from sdcourse.mini import evaluate as ev
from sdcourse.loader import load_pipeline


def nearest_palette_distance(images) -> np.ndarray:
    return ev.palette_distance(np.stack([np.asarray(im) for im in images])).min(-1)


def main(n: int = 200, thresholds=(5, 10, 20, 30, 40, 60)):
    pipe = load_pipeline("mini", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    captions = [c for _, c in ev.heldout_prompts(n)]
    dist = {g: nearest_palette_distance(ev.draw_captions(pipe, captions, g)) for g in (7.5, 1.0)}
    for t in thresholds:
        hi, lo = (dist[7.5] < t).mean((1, 2)), (dist[1.0] < t).mean((1, 2))
        diff = hi - lo
        print(f"threshold {t:>2}: guidance 7.5 {100 * hi.mean():.2f}%, 1.0 {100 * lo.mean():.2f}%, "
              f"paired difference {100 * diff.mean():+.3f} ± {100 * diff.std() / np.sqrt(n):.3f} points")
    print(f"mean distance to the nearest palette colour: 7.5 {dist[7.5].mean():.2f}, 1.0 {dist[1.0].mean():.2f}")


if __name__ == "__main__":
    main()
