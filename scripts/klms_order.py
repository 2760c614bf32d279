"""Why K-LMS overshoots with the mini model at guidance 7.5: its order, and the guidance scale.

On the first 32 held-out captions (the evaluation's seeds, 20 steps) it prints colour and shape accuracy for
K-LMS of order 1 to 4 (diffusers' default is 4; order 1 is Euler's method) at guidance 7.5, for Euler
and DPM-Solver++ at 7.5, and for K-LMS of order 4 at guidance 2 to 5. The model card quotes it.

    HF_HUB_OFFLINE=1 python scripts/klms_order.py
"""
import functools

import numpy as np
import torch

from sdcourse.mini import evaluate as ev
from sdcourse.loader import load_pipeline
from sdcourse.schedulers import make_scheduler


def accuracy(pipe, pairs, guidance: float, sampler: str, order: int | None = None) -> tuple[float, float]:
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    if order is not None:
        pipe.scheduler.step = functools.partial(pipe.scheduler.step, order=order)
    images = ev.draw_captions(pipe, [caption for _, caption in pairs], guidance, progress=False, sampler=None)
    scores = [ev.score(ev.read_picture(im), scene) for im, (scene, _) in zip(images, pairs)]
    return float(np.mean([s["colour"] for s in scores])), float(np.mean([s["shape"] for s in scores]))


def main(n: int = 32):
    pipe = load_pipeline("mini", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pairs = ev.heldout_prompts(n)
    runs = [(f"K-LMS order {k}, guidance 7.5", 7.5, "klms", k) for k in (1, 2, 3, 4)]
    runs += [("Euler, guidance 7.5", 7.5, "euler", None), ("DPM-Solver++, guidance 7.5", 7.5, "dpm++", None)]
    runs += [(f"K-LMS order 4, guidance {g}", g, "klms", 4) for g in (2, 3, 4, 5)]
    for label, guidance, sampler, order in runs:
        colour, shape = accuracy(pipe, pairs, guidance, sampler, order)
        print(f"{label:30s} colour {100 * colour:5.1f}%  shape {100 * shape:5.1f}%")


if __name__ == "__main__":
    main()
