"""How stiff is the guided model along a sampler's path? The largest stretch of its Jacobian, times the step.

    python scripts/guided_stiffness.py --model checkpoints/v2/unet-stage --steps 30

Follows held-out captions (one seed each) along an Euler trajectory of diffusers' K-LMS sigmas (``--steps``,
guidance ``--guidance``; Euler's method stays stable where K-LMS's order 4 does not). At each noise level it finds,
by power iteration with finite differences, the largest stretch |J v| / |v| of the guided noise prediction
eps_u + g (eps_c - eps_u) as a function of K-LMS's latents x (the model sees x / sqrt(sigma^2 + 1)), and prints
it times the step in sigma: the number that decides whether an explicit step of that size is stable (for Euler's
method up to 2, for K-LMS's order 4 far less). Guidance 1 beside it shows how much of the stretch guidance adds.
"""
from __future__ import annotations

import argparse

import torch


def top_stretch(f, x: torch.Tensor, iters: int = 8, delta: float = 1e-2, gen: torch.Generator | None = None):
    """Per item of the batch ``x``, the largest stretch |J v| / |v| of ``f`` at ``x`` (J: f's Jacobian, one per
    item), by ``iters`` steps of power iteration on finite differences of step ``delta``. Returns a (B,) tensor."""
    base = f(x)
    v = torch.randn(x.shape, generator=gen)
    stretch = torch.zeros(len(x))
    for _ in range(iters):
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        jv = (f(x + delta * v) - base) / delta
        stretch = jv.flatten(1).norm(dim=1)
        v = jv
    return stretch


def measure(pipe, captions: list[str], steps: int, guidance: float, sigma_range=(0.2, 6.0), iters: int = 8):
    """Rows (step index, sigma, step in sigma, stretches at guidance 1, stretches at ``guidance``), one per step
    whose sigma lies in ``sigma_range``, along the Euler trajectory at ``guidance`` from seed-0 noise."""
    from diffusers import LMSDiscreteScheduler

    from sdcourse.loop import encode_prompt

    unet = pipe.unet
    sched = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(0)
    side = unet.config.sample_size
    rows = []
    with torch.no_grad():
        empty, cond = encode_prompt(pipe.tokenizer, pipe.text_encoder, captions).chunk(2)  # [uncond; cond]
        x = torch.randn(len(captions), unet.config.in_channels, side, side, generator=gen) * sched.sigmas[0]
        for i, t in enumerate(sched.timesteps):
            s = float(sched.sigmas[i])
            scale = (s**2 + 1) ** -0.5

            def guided(latents, g):
                u, c = (unet(latents * scale, t, e).sample for e in (empty, cond))
                return u + g * (c - u)

            if sigma_range[0] <= s <= sigma_range[1]:
                rows.append((i, s, s - float(sched.sigmas[i + 1]),
                             top_stretch(lambda z: guided(z, 1.0), x, iters, gen=gen),
                             top_stretch(lambda z: guided(z, guidance), x, iters, gen=gen)))
            x = x + (sched.sigmas[i + 1] - s) * guided(x, guidance)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help='"mini" or a diffusers folder')
    ap.add_argument("-n", type=int, default=16, help="held-out captions")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=7.5)
    args = ap.parse_args(argv)
    if args.n < 1 or args.steps < 2:
        ap.error("-n must be at least 1 and --steps at least 2")
    from sdcourse.loader import load_pipeline
    from sdcourse.mini import evaluate as ev

    pipe = load_pipeline(args.model, device="cpu", dtype=torch.float32)
    rows = measure(pipe, [c for _, c in ev.heldout_prompts(args.n)], args.steps, args.guidance)
    print(f"{args.n} held-out captions, {args.steps} K-LMS sigmas, guidance {args.guidance:g}: the largest stretch "
          f"of the guided prediction's Jacobian times the step in sigma (median, largest over the captions)")
    print(" step  sigma  d sigma   guidance 1         guidance %g" % args.guidance)
    for i, s, ds, one, g in rows:
        print(f"{i:5d} {s:6.3f} {ds:7.3f}   {(one * ds).median():5.2f} {(one * ds).max():5.2f}      "
              f"{(g * ds).median():5.2f} {(g * ds).max():5.2f}")
    return rows


if __name__ == "__main__":
    main()
