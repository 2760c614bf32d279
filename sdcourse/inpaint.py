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
from .loop import Generated, denoise, encode_prompt
from .validate import check_guidance, check_picture, check_prompts, check_seed, check_steps

THRESHOLD = 0.5


def _mask_values(mask) -> np.ndarray:
    """The mask as an H x W float array in [0, 1]."""
    if isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L"), dtype=np.float64) / 255.0
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a PIL picture, a numpy array or a torch tensor, got {type(mask).__name__}")
    arr = np.squeeze(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be one H x W channel (white = repaint), got shape {mask.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"a float mask must hold values in [0, 1], got values from {arr.min()} to {arr.max()}")
    return arr


def prepare_mask(mask, image, *, strict: bool = False) -> torch.Tensor:
    """Check a mask against its picture and return it binarised, shape ``(1, 1, H, W)``, 1 = repaint.

    ``mask``: a PIL picture (any mode; converted to grey), an H x W array or tensor (bool, uint8
    0..255, or float 0..1). It must have the picture's size. Grey values are thresholded:
    >= 0.5 (128 of 255) means repaint; with ``strict=True`` any grey value is an error.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL picture, got {type(image).__name__}")
    values = _mask_values(mask)
    h, w = values.shape
    if (w, h) != image.size:
        raise ValueError(f"mask and picture must have the same size: the mask is {w}x{h}, "
                         f"the picture {image.width}x{image.height}")
    grey = np.count_nonzero((values > 0) & (values < 1))
    if strict and grey:
        raise ValueError(f"the mask is not binary: {grey} pixels are neither black nor white "
                         f"(use strict=False to threshold them at {THRESHOLD})")
    binary = (values >= THRESHOLD).astype(np.float32)
    if not binary.any():
        raise ValueError("the mask is all black: nothing to repaint (white marks the part to repaint)")
    return torch.from_numpy(binary)[None, None]


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
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[:2] != (1, 1):
        raise ValueError(f"mask must be a (1, 1, H, W) tensor from prepare_mask, got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    f = int(vae_scale_factor)
    if mask.shape[-1] % f or mask.shape[-2] % f:
        raise ValueError(f"mask sides must be multiples of {f}, got {mask.shape[-1]}x{mask.shape[-2]}")
    return F.max_pool2d(mask.float(), kernel_size=f)


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
    image = check_picture(image, f)
    m = latent_mask(prepare_mask(mask, image, strict=strict), f)
    steps, guidance = check_steps(steps), check_guidance(guidance)
    prompts = check_prompts(prompt)
    if len(prompts) != 1:
        raise ValueError(f"inpaint takes one prompt for its one picture, got {len(prompts)}")
    generator = torch.Generator("cpu").manual_seed(check_seed(seed))
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, prompts, negative)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    # Same draws, same order as the pipeline: the picture's latent sample, then the noise.
    clean = pil_to_latents(pipe.vae, [image], generator=generator)
    noise = torch.randn(clean.shape, generator=generator, device=generator.device, dtype=clean.dtype).to(clean.device)
    m = m.to(clean.device, clean.dtype)

    def paste_back(index, t, latents):  # runs after every step of the loop
        timesteps = scheduler.timesteps  # set by denoise for this many steps
        if index < len(timesteps) - 1:  # the outside, noised to the level the next step expects
            known = scheduler.add_noise(clean, noise, timesteps[index + 1 : index + 2])  # same noise every step
        else:  # after the last step: the clean picture's latents
            known = clean
        # .contiguous(): the broadcast with the (1, 1, h, w) mask can return a channels-last
        # layout, and the UNet's convolutions then round differently in the last bits.
        return ((1 - m) * known + m * latents).contiguous()

    latents = denoise(pipe.unet, scheduler, embeddings, noise * scheduler.init_noise_sigma, guidance, steps,
                      callback=paste_back, progress=progress, generator=generator)
    return Generated(latents=latents, images=latents_to_pil(pipe.vae, latents))
