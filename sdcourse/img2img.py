"""img2img: start the denoising loop part-way, from a noised copy of a picture.

``strength`` says how far back into the noise the picture is sent. With ``n`` inference
steps the loop skips the first ``n - int(n * strength)`` of them (the rule of diffusers'
``StableDiffusionImg2ImgPipeline.get_timesteps``): the picture is encoded by the VAE,
noised to the timestep where the loop starts (``scheduler.add_noise``), and the remaining
steps of the ordinary text-to-image loop (:func:`sdcourse.loop.denoise`) finish it.

* strength 0: no step runs; the result is the picture after a VAE round trip;
* strength 1: every step runs, from the noisiest timestep; the picture only survives in
  the ``sqrt(alpha_bar)`` share of the start latents (about 7% for SD's schedule);
* in between: the higher the strength, the more the prompt and the less the picture decide.

>>> result = img2img(pipe, picture, "a red circle", strength=0.6, steps=20, seed=0)  # doctest: +SKIP
>>> result.images[0]  # doctest: +SKIP
"""
from __future__ import annotations

import math
import warnings

import torch

from .images import latents_to_pil, pil_to_latents
from .loader import sharing_pipeline
from .loop import Generated, denoise, encode_prompt, prepare_timesteps
from .seeds import make_generator
from .validate import check_img2img_inputs, check_steps, check_strength


def start_step(num_inference_steps: int, strength: float) -> int:
    """Index of the first inference step img2img runs: ``n - int(n * strength)`` (n when none run).

    >>> start_step(20, 0.6), start_step(20, 1.0), start_step(20, 0.0)
    (8, 0, 20)
    """
    n = check_steps(num_inference_steps)
    strength = check_strength(strength)
    return n - min(int(n * strength), n)


def img2img_pipeline(pipe):
    """A ``StableDiffusionImg2ImgPipeline`` that shares ``pipe``'s modules (no second copy in memory).

    >>> i2i = img2img_pipeline(pipe)  # doctest: +SKIP
    >>> i2i.unet is pipe.unet  # doctest: +SKIP
    True
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    return sharing_pipeline(pipe, StableDiffusionImg2ImgPipeline, "img2img_pipeline")


@torch.no_grad()
def noised_start(pipe, image, strength: float, num_inference_steps: int, generator: torch.Generator):
    """The start latents of img2img and where the loop starts: ``(latents, start_step, clean_latents)``.

    Draws from ``generator`` in the pipeline's order (the VAE's latent sample first, then the
    noise), so the same seed gives the pipeline's start latents. Prepares the scheduler for the run
    (:func:`sdcourse.loop.prepare_timesteps`, from the start step on).
    ``latents`` is ``(1, 4, H/8, W/8)``; with strength 0 it is the clean latents themselves.
    """
    begin = start_step(num_inference_steps, strength)  # how many of the first steps to skip
    clean = pil_to_latents(pipe.vae, [image], generator=generator)  # the picture's latents (a VAE sample)
    # text-to-image's timesteps for this many steps, from the start step on
    timesteps = prepare_timesteps(pipe.scheduler, num_inference_steps, begin, device=pipe.unet.device)
    if begin == num_inference_steps:  # strength 0 (or too small for one step): nothing to redo
        return clean, begin, clean
    noise = torch.randn(clean.shape, generator=generator, device=generator.device, dtype=clean.dtype)  # fresh noise
    latents = pipe.scheduler.add_noise(clean, noise.to(clean.device), timesteps[:1])  # noised to the start step
    return latents, begin, clean


def img2img(pipe, image, prompt, strength: float = 0.6, steps: int = 20, guidance: float = 7.5, seed: int = 0,
            *, negative=None, progress: bool = False) -> Generated:
    """Hand-built img2img: encode the picture, noise it to the start step, run the rest of the loop, decode.

    ``image`` is a PIL picture whose sides are multiples of ``pipe.vae_scale_factor`` (resize it
    to the model's size first). Returns :class:`sdcourse.loop.Generated` with ``latents``
    ``(1, 4, H/8, W/8)`` and ``images`` (one PIL picture). For the same seed, steps, guidance and
    scheduler it gives the output of ``img2img_pipeline(pipe)(prompt, image, strength, ...)``.
    Unlike the pipeline (which refuses a strength that leaves no step), strength 0 returns the
    VAE round trip of the picture.
    """
    image, prompts, strength, steps, guidance = check_img2img_inputs(image, prompt, strength, steps, guidance,
                                                                     pipe.vae_scale_factor)
    generator = make_generator(seed)  # on the CPU: the same draws as the pipeline's, on every machine
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, prompts, negative)  # [uncond, cond]
    latents, begin, _ = noised_start(pipe, image, strength, steps, generator)  # the picture, noised to the start
    if begin == steps and strength > 0:
        warnings.warn(f"strength {strength:g} with {steps} steps runs no step (int({steps} x {strength:g}) = 0): "
                      f"the result is the picture after a VAE round trip; raise strength to at least {1 / steps:g} "
                      f"or steps to at least {math.ceil(1 / strength)}.", stacklevel=2)
    if begin < steps:  # the rest of the ordinary loop, from the start step
        latents = denoise(pipe.unet, pipe.scheduler, embeddings, latents, guidance, steps, progress=progress,
                          start_step=begin, generator=generator)
    return Generated(latents=latents, images=latents_to_pil(pipe.vae, latents))  # decoded by the VAE
