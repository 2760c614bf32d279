"""Picture comparison numbers: PSNR (optionally inside a region) and mean absolute difference.

PSNR, the peak signal-to-noise ratio, is ``10 * log10(255**2 / MSE)`` in decibels for 8-bit
pictures: identical pictures give infinity, every halving of the error adds about 6 dB,
and 8-bit JPEG-quality copies typically score 30-40 dB.

>>> from PIL import Image
>>> a = Image.new("RGB", (8, 8), (100, 100, 100))
>>> b = Image.new("RGB", (8, 8), (110, 100, 100))
>>> round(psnr(a, b), 2)
32.9
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def to_array(image, name: str = "image") -> np.ndarray:
    """A PIL picture or an H x W x C uint8 array as a float64 H x W x C array in 0..255."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    elif isinstance(image, np.ndarray) and image.ndim == 3:
        arr = image.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a PIL picture or an H x W x 3 array, got {type(image).__name__}")
    return arr


def _region(mask, shape) -> np.ndarray:
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) >= 128
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask).astype(bool)
    mask = mask.reshape(mask.shape[-2:]) if mask.ndim > 2 and mask.size == shape[0] * shape[1] else mask
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"the region is {mask.shape[1]}x{mask.shape[0]} pixels but the pictures are {shape[1]}x{shape[0]}")
    if not mask.any():
        raise ValueError("the region is empty: it selects no pixel, so there is nothing to compare")
    return mask


def psnr(a, b, region=None) -> float:
    """PSNR in dB between two pictures of the same size, over all pixels or only where ``region`` is true.

    ``region`` is an H x W boolean array, tensor or picture (white = inside). Returns ``math.inf``
    for identical pixels.
    """
    x, y = to_array(a, "a"), to_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"pictures must have the same size: {x.shape[1]}x{x.shape[0]} vs {y.shape[1]}x{y.shape[0]}")
    if region is not None:
        sel = _region(region, x.shape)
        x, y = x[sel], y[sel]
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def mean_abs_diff(a, b) -> float:
    """Mean absolute pixel difference between two pictures of the same size, as a fraction of 255."""
    x, y = to_array(a, "a"), to_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"pictures must have the same size: {x.shape[1]}x{x.shape[0]} vs {y.shape[1]}x{y.shape[0]}")
    return float(np.abs(x - y).mean() / 255.0)
