"""Inpainting: repaint the white part of a mask, keep the rest of the picture.

Mask convention (the same as diffusers): **white = repaint, black = keep**. A mask is read as
grey levels in [0, 1] and thresholded at 0.5: a pixel >= 0.5 is repainted, one below is kept
(diffusers' ``VaeImageProcessor(do_binarize=True)`` uses the same rule). Pass
``strict=True`` to refuse masks with grey pixels instead.

The hand-built method here is *latent blending* on an ordinary text-to-image model: run the
usual denoising loop from pure noise, and after every step overwrite the latents outside the
mask with the original picture's latents, noised to the level of the next step. The model
only ever invents the inside; the outside is the picture's own. At the last step the outside
latents are the clean picture's latents exactly.

>>> result = inpaint(pipe, picture, mask, "a yellow square", steps=20, seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import latents_to_pil, pil_to_latents
from .loader import sharing_pipeline
from .loop import Generated, denoise, encode_prompt, prepare_timesteps
from .seeds import make_generator
from .validate import check_mask, check_picture_run, check_pixel_mask

THRESHOLD = 0.5


def prepare_mask(mask, image, *, strict: bool = False) -> torch.Tensor:
    """Check a mask against its picture and return it binarised, shape ``(1, 1, H, W)``, 1 = repaint.

    ``mask``: a PIL picture (any mode; converted to grey), an H x W array or tensor (bool, uint8
    0..255, or float 0..1). It must have the picture's size. Grey values are thresholded:
    >= 0.5 (128 of 255) means repaint; with ``strict=True`` any grey value is an error.
    """
    values = check_mask(mask, image, strict, THRESHOLD)  # H x W grey levels in [0, 1], the picture's size
    binary = (values >= THRESHOLD).astype(np.float32)  # 1 = repaint (white), 0 = keep (black)
    return torch.from_numpy(binary)[None, None]  # (1, 1, H, W), like the pipeline's mask


def mask_to_pil(mask: torch.Tensor) -> Image.Image:
    """A ``(1, 1, H, W)`` or ``(H, W)`` 0/1 mask as a black-and-white PIL picture (white = 1)."""
    arr = mask.detach().cpu().reshape(mask.shape[-2:]).numpy()
    return Image.fromarray((arr >= THRESHOLD).astype(np.uint8) * 255)


def latent_mask(mask: torch.Tensor, vae_scale_factor: int) -> torch.Tensor:
    """Shrink a pixel mask ``(1, 1, H, W)`` to the latent grid ``(1, 1, H/f, W/f)``.

    Each latent cell stands for an f x f block of pixels (f = 8 for SD); a cell is repainted if
    *any* of its pixels is (max pooling), so everything the mask marks gets repainted. The
    inpainting pipeline samples one pixel per block instead (nearest); for masks drawn on the
    f x f grid, like the course's, the two agree.
    """
    f = check_pixel_mask(mask, vae_scale_factor)  # (1, 1, H, W), sides multiples of f
    return F.max_pool2d(mask.float(), kernel_size=f)  # the largest of each f x f block: 1 if any pixel is


def inpaint_pipeline(pipe):
    """A ``StableDiffusionInpaintPipeline`` that shares ``pipe``'s modules (no second copy in memory).

    With an ordinary text-to-image UNet (4 input channels) this pipeline does latent blending,
    like :func:`inpaint`; with a dedicated inpainting UNet (9 input channels: latents, mask,
    masked-picture latents) the UNet itself sees the mask.
    """
    from diffusers import StableDiffusionInpaintPipeline

    return sharing_pipeline(pipe, StableDiffusionInpaintPipeline, "inpaint_pipeline")


def inpaint(pipe, image, mask, prompt, steps: int = 20, guidance: float = 7.5, seed: int = 0, *,
            negative=None, strict: bool = False, progress: bool = False) -> Generated:
    """Hand-built latent-blend inpainting with the text-to-image loop of :mod:`sdcourse.loop`.

    ``image``: a PIL picture with sides divisible by ``pipe.vae_scale_factor``; ``mask``: same
    size, white = repaint (see :func:`prepare_mask`). Returns :class:`sdcourse.loop.Generated`
    with ``latents`` ``(1, 4, H/8, W/8)`` and ``images`` (one picture). For masks on the 8 x 8
    grid it gives the same latents as ``inpaint_pipeline(pipe)`` with a 4-channel UNet and
    ``strength=1`` (same seed, steps, guidance and scheduler).
    """
    f = pipe.vae_scale_factor
    image, prompts, steps, guidance = check_picture_run("inpaint", image, prompt, steps, guidance, f)
    m = latent_mask(prepare_mask(mask, image, strict=strict), f)  # 1 = repaint, one value per latent cell
    generator = make_generator(seed)  # on the CPU: the same draws as the pipeline's, on every machine
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, prompts, negative)  # [uncond, cond]
    scheduler = pipe.scheduler
    timesteps = prepare_timesteps(scheduler, steps, device=pipe.unet.device)  # text-to-image's, all of them
    # Same draws, same order as the pipeline: the picture's latent sample, then the noise.
    clean = pil_to_latents(pipe.vae, [image], generator=generator)
    noise = torch.randn(clean.shape, generator=generator, device=generator.device, dtype=clean.dtype).to(clean.device)
    m = m.to(clean.device, clean.dtype)

    def paste_back(index, t, latents):  # runs after every step of the loop
        if index < len(timesteps) - 1:  # the outside, noised to the level the next step expects
            known = scheduler.add_noise(clean, noise, timesteps[index + 1 : index + 2])  # same noise every step
        else:  # after the last step: the clean picture's latents
            known = clean
        # .contiguous(): the broadcast with the (1, 1, h, w) mask can return a channels-last
        # layout, and the UNet's convolutions then round differently in the last bits.
        return ((1 - m) * known + m * latents).contiguous()

    latents = denoise(pipe.unet, scheduler, embeddings, noise * scheduler.init_noise_sigma, guidance, steps,
                      callback=paste_back, progress=progress, generator=generator)  # from pure noise
    return Generated(latents=latents, images=latents_to_pil(pipe.vae, latents))
