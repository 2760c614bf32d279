"""Guidance by a loss: steer sampling towards a property that no prompt names.

At every step of the K-LMS loop the UNet's noise guess gives the model's current guess of the clean picture.
A loss on that picture (for example: how far its border is from blue) has a gradient with respect to the
noisy latents; a small step down that gradient before the scheduler's step pushes the whole run towards
pictures with a lower loss. This is the "blue loss" of the fastai Stable Diffusion deep dive, with any loss::

    from sdcourse.steer import background_loss, steered
    out = steered(pipe, "a red circle", background_loss((0.1, 0.3, 0.9)), loss_scale=200, seed=0)
    out.image, out.losses
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .images import latents_to_pil
from .loop import encode_prompt, initial_latents, prepare_timesteps
from .validate import check_guidance, check_prompts, check_seed, check_steps

__all__ = ["Steered", "background_loss", "steered"]


@dataclass
class Steered:
    """A steered run: the picture, and the loss of the model's guess of the clean picture at each step."""

    image: object
    losses: list[float] = field(default_factory=list)


def background_loss(rgb, border: int = 6):
    """A loss on pictures (``(B, 3, H, W)`` in 0-1): the mean distance of a ``border`` pixels wide frame to the
    colour ``rgb`` (three numbers in 0-1). Low when the background around the shape has that colour."""
    target = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)

    def loss(images):
        frame = torch.ones_like(images[:1, :1], dtype=torch.bool)
        frame[..., border:-border, border:-border] = False
        return (images - target.to(images)).abs()[frame.expand_as(images)].mean()

    return loss


def steered(pipe, prompt: str, loss_fn, loss_scale: float = 200.0, seed: int = 0, steps: int = 30,
            guidance: float = 7.5, every: int = 1, progress: bool = True) -> Steered:
    """Generate with K-LMS and classifier-free guidance, pushing the latents down the gradient of
    ``loss_scale * loss_fn(picture guessed at this step)`` every ``every`` steps (``loss_scale`` 0: no push)."""
    from diffusers import LMSDiscreteScheduler
    from tqdm.auto import tqdm

    check_prompts(prompt), check_seed(seed), check_steps(steps), check_guidance(guidance)
    scheduler = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    unet, vae = pipe.unet, pipe.vae
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, [prompt])
    timesteps = prepare_timesteps(scheduler, steps, device=unet.device)
    side = unet.config.sample_size * pipe.vae_scale_factor
    latents = initial_latents(unet, scheduler, 1, side, side, seed=seed, vae_scale_factor=pipe.vae_scale_factor)
    losses = []
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="steered")):
        with torch.no_grad():  # the guided noise guess, as in any guided loop
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            uncond, cond = unet(model_input, t, encoder_hidden_states=embeddings).sample.chunk(2)
            noise = uncond + guidance * (cond - uncond)
        sigma = scheduler.sigmas[i].to(latents)
        if i % every == 0:  # the push: the gradient of the loss on the guessed clean picture
            latents = latents.detach().requires_grad_()
            x0 = latents - sigma * noise  # K-LMS's guess of the clean latents
            picture = vae.decode(x0 / vae.config.scaling_factor).sample / 2 + 0.5
            loss = loss_fn(picture)
            grad = torch.autograd.grad(loss_scale * loss, latents)[0] if loss_scale else torch.zeros_like(latents)
            latents = latents.detach() - sigma ** 2 * grad
            losses.append(loss.item())
        latents = scheduler.step(noise, t, latents).prev_sample
    return Steered(image=latents_to_pil(vae, latents)[0], losses=losses)
