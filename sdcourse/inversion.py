"""DDIM inversion: run DDIM backwards from a picture to the noise it would have come from, then forwards again.

DDIM without added noise (eta 0) is a deterministic map from noise to picture; each of its steps can be run the
other way. One step up, from the latents ``x`` at the level ``a`` (``alphas_cumprod`` at the lower timestep) to
the level ``a_next``, with the UNet's noise guess ``eps``::

    x0 = (x - sqrt(1 - a) * eps) / sqrt(a)           # the clean latents this guess implies
    x_next = sqrt(a_next) * x0 + sqrt(1 - a_next) * eps

:func:`invert` takes a picture to its noise; :func:`regenerate` runs DDIM from that noise with any prompt: the
same prompt gives the picture back (nearly: each step up uses the noise guess of the level above, an
approximation), another prompt edits it, keeping what the prompt does not change.
"""
from __future__ import annotations

import torch

from .images import latents_to_pil, pil_to_latents
from .loop import denoise, encode_prompt, prepare_timesteps
from .validate import check_guidance, check_prompts, check_steps

__all__ = ["inversion_step", "invert", "regenerate"]


def inversion_step(x: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, a_next: torch.Tensor) -> torch.Tensor:
    """One DDIM step up the noise levels: latents ``x`` at level ``a`` to level ``a_next`` (see the module)."""
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def _ddim(pipe, steps: int):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    prepare_timesteps(scheduler, steps, device=pipe.unet.device)
    return scheduler


@torch.no_grad()
def invert(pipe, picture, prompt: str, steps: int = 50, guidance: float = 1.0, progress: bool = True) -> torch.Tensor:
    """The noise latents from which DDIM (``steps`` steps, ``guidance``) would draw ``picture`` for ``prompt``."""
    from tqdm.auto import tqdm

    check_prompts(prompt), check_steps(steps), check_guidance(guidance)
    scheduler = _ddim(pipe, steps)
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, [prompt])
    x = pil_to_latents(pipe.vae, picture)
    alphas = scheduler.alphas_cumprod.to(x)
    up = scheduler.timesteps.flip(0)  # least noisy first
    for i, t in enumerate(tqdm(up, disable=not progress, desc="inverting")):
        a = alphas[up[i - 1]] if i else scheduler.final_alpha_cumprod.to(x)  # where x is now
        uncond, cond = pipe.unet(torch.cat([x] * 2), t, encoder_hidden_states=embeddings).sample.chunk(2)
        eps = uncond + guidance * (cond - uncond)
        x = inversion_step(x, eps, a, alphas[t])
    return x


def regenerate(pipe, noise: torch.Tensor, prompt: str, steps: int = 50, guidance: float = 1.0,
               progress: bool = True):
    """DDIM (eta 0) from ``noise`` for ``prompt``: the picture :func:`invert` started from, or an edit of it."""
    check_prompts(prompt), check_steps(steps), check_guidance(guidance)
    scheduler = _ddim(pipe, steps)
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, [prompt])
    latents = denoise(pipe.unet, scheduler, embeddings, noise.clone(), guidance, steps, progress=progress)
    return latents_to_pil(pipe.vae, latents)[0]
