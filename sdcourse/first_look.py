"""A first look at diffusion in pictures, before any of its parts has a name.

Training showed the model pictures with noise added, a little or a lot, and asked it to guess the noise. Drawing
runs that backwards: start from pure noise and, step by step, guess the clean picture and remove some noise.
:func:`first_look` shows both on one picture, column by column: on top, the finished picture with as much noise
as there was at each step; below, the model's guess of the clean picture at that step.

(The pipeline does this to a small compressed copy of the picture, its latents, not to the pixels: the top row
adds the noise to the pixels, so that it can be seen. Chapter 3 opens the compression.)
"""
from __future__ import annotations

import numpy as np
import torch

from .images import image_grid, latents_to_pil, pil_to_tensor, tensor_to_pil
from .loop import denoise, encode_prompt, initial_latents, prepare_timesteps
from .validate import check_prompts, check_seed, check_steps

__all__ = ["first_look"]


def first_look(pipe, prompt: str, seed: int = 0, steps: int = 20, shown: int = 6, guidance: float = 7.5):
    """Draw ``prompt`` and return ``(grid, picture)``: the grid has ``shown`` columns, steps spread evenly from
    the first to the last; the top row is the finished picture noised as the sample was at that step, the
    bottom row the model's guess of the clean picture at that step."""
    check_prompts(prompt), check_seed(seed), check_steps(steps)
    if not isinstance(shown, int) or not 2 <= shown <= steps:
        raise ValueError(f"shown must be a whole number from 2 to steps ({steps}), got {shown!r}")
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # the pipeline's own stays untouched
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, [prompt])
    timesteps = prepare_timesteps(scheduler, steps, device=pipe.unet.device)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    latents = initial_latents(pipe.unet, scheduler, 1, side, side, seed=seed, vae_scale_factor=pipe.vae_scale_factor,
                              dtype=embeddings.dtype)
    final, guesses = denoise(pipe.unet, scheduler, embeddings, latents, guidance, steps, progress=False,
                             return_x0=True)
    picture = latents_to_pil(pipe.vae, final)[0]
    picks = np.linspace(0, steps - 1, shown).round().astype(int)
    guessed = latents_to_pil(pipe.vae, torch.cat([guesses[i] for i in picks]).to(pipe.unet.device, pipe.unet.dtype))

    clean = pil_to_tensor([picture]).float()  # pixels in [-1, 1]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    alphas = scheduler.alphas_cumprod  # how much of the picture is left at each timestep
    noised = [tensor_to_pil((alphas[int(timesteps[i])].sqrt() * clean
                             + (1 - alphas[int(timesteps[i])]).sqrt() * noise).clamp(-1, 1))[0] for i in picks]
    grid = image_grid(noised + guessed, rows=2, cols=shown,
                      row_labels=["picture + noise", "model's guess"],
                      col_labels=[f"step {i + 1}/{steps}" for i in picks])
    return grid, picture
