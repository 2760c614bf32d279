"""Where along the noise levels does K-LMS (order 4) go wrong at guidance 7.5? Swap in Euler's method there.

    python scripts/klms_order_bands.py --model checkpoints/v2/unet-stage -n 32

Draws the same held-out captions (seed i for caption i) with diffusers' ``LMSDiscreteScheduler`` built from the
model's own scheduler config, once per band: in every step whose sigma lies in the band [low, high) the scheduler
takes an order-1 step (Euler's method), elsewhere its default order 4. The checker then reads every picture
(``sdcourse.mini.evaluate``). The band where order 1 repairs the pictures is where the guided denoiser is too stiff
for order 4 at the schedule's step sizes, so it is where a training penalty on that stiffness should look
(``scripts/continue_unet.py --smooth-sigma-max``).
"""
from __future__ import annotations

import argparse

BANDS = [(0.0, 0.0), (0.0, float("inf")), (3.0, float("inf")), (1.0, 3.0), (0.3, 1.0), (0.0, 0.3), (0.0, 1.0)]


def band_scheduler(config, low: float, high: float):
    """An ``LMSDiscreteScheduler`` of ``config`` that steps with order 1 where low <= sigma < high."""
    from diffusers import LMSDiscreteScheduler

    class Banded(LMSDiscreteScheduler):
        def step(self, model_output, timestep, sample, order=4, return_dict=True):
            if self.step_index is None:
                self._init_step_index(timestep)
            sigma = float(self.sigmas[self.step_index])
            return super().step(model_output, timestep, sample, order=1 if low <= sigma < high else order,
                                return_dict=return_dict)

    return Banded.from_config(config)


def main(argv=None) -> list[tuple[tuple[float, float], dict]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help='"mini" or a diffusers folder')
    ap.add_argument("-n", type=int, default=32, help="held-out captions")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--bands", type=float, nargs="*", default=None,
                    help="low high pairs (default: none, everywhere, and five bands in between)")
    args = ap.parse_args(argv)
    if args.bands is not None and len(args.bands) % 2:
        ap.error("--bands takes pairs: low high low high ...")
    import torch

    from sdcourse.loader import load_pipeline, sharing_pipeline
    from sdcourse.mini import evaluate as ev

    bands = BANDS if args.bands is None else list(zip(args.bands[::2], args.bands[1::2]))
    pipe = load_pipeline(args.model, device="cpu", dtype=torch.float32)
    pairs = ev.heldout_prompts(args.n)
    results = []
    for low, high in bands:
        drawer = sharing_pipeline(pipe, type(pipe), "klms_order_bands")
        drawer.scheduler = band_scheduler(pipe.scheduler.config, low, high)
        images = ev.draw_captions(drawer, [c for _, c in pairs], args.guidance, args.steps, progress=False,
                                  sampler=None)  # caption i with seed i, drawn with the drawer's own scheduler
        accuracy = ev.attribute_accuracy([ev.read_picture(im) for im in images], [s for s, _ in pairs])
        results.append(((low, high), accuracy))
        where = "nowhere" if low >= high else f"{low:g} <= sigma < {high:g}"
        print(f"order 1 {where:>20}: " + ", ".join(f"{k} {v:.0%}" for k, v in accuracy.items()), flush=True)
    return results


if __name__ == "__main__":
    main()
