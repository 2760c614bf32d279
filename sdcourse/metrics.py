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
    """A picture as a float64 H x W x C array in 0..255.

    Accepts a PIL picture, an H x W x C integer array (0..255), or an H x W x C float array in [0, 1]
    (multiplied by 255, so the same picture gives the same PSNR either way). A float array with
    values outside [0, 1], or with NaN, is refused: its scale cannot be told.
    """
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    elif isinstance(image, np.ndarray) and image.ndim == 3:
        if image.size == 0:
            raise ValueError(f"{name} is empty: shape {image.shape}")
        if np.issubdtype(image.dtype, np.integer):
            if image.min() < 0 or image.max() > 255:
                raise ValueError(f"{name} is an integer array with values from {image.min()} to {image.max()}; "
                                 f"pixel values must lie in 0..255")
            arr = image.astype(np.float64)
        elif np.issubdtype(image.dtype, np.floating):
            if not np.isfinite(image).all():
                raise ValueError(f"{name} holds NaN or infinite values; PSNR of them means nothing")
            if image.min() < 0 or image.max() > 1:
                raise ValueError(f"{name} is a float array with values from {image.min():g} to {image.max():g}; "
                                 f"give floats in [0, 1] or a uint8 array in 0..255")
            arr = image.astype(np.float64) * 255.0
        else:
            raise TypeError(f"{name} must be an integer array (0..255) or a float array in [0, 1], "
                            f"got dtype {image.dtype}")
    else:
        raise TypeError(f"{name} must be a PIL picture or an H x W x 3 array, got {type(image).__name__}")
    return arr


def _same_size(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape:
        raise ValueError(f"pictures must have the same shape (height, width, channels): a is {x.shape}, b is {y.shape}")


def _region(mask, shape) -> np.ndarray:
    if not isinstance(mask, (Image.Image, torch.Tensor, np.ndarray, list)):
        raise TypeError(f"region must be an H x W boolean array, tensor or picture; got {mask!r}")
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) >= 128
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask).astype(bool)
    mask = mask.reshape(mask.shape[-2:]) if mask.ndim > 2 and mask.size == shape[0] * shape[1] else mask
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"the region is {mask.shape[1]}x{mask.shape[0]} pixels "
                         f"but the pictures are {shape[1]}x{shape[0]}")
    if not mask.any():
        raise ValueError("the region is empty: it selects no pixel, so there is nothing to compare")
    return mask


def psnr(a, b, region=None) -> float:
    """PSNR in dB between two pictures of the same size, over all pixels or only where ``region`` is true.

    ``region`` is an H x W boolean array, tensor or picture (white = inside). Returns ``math.inf``
    for identical pixels.
    """
    x, y = to_array(a, "a"), to_array(b, "b")
    _same_size(x, y)
    if region is not None:
        sel = _region(region, x.shape)
        x, y = x[sel], y[sel]
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def mean_abs_diff(a, b) -> float:
    """Mean absolute pixel difference between two pictures of the same size, as a fraction of 255."""
    x, y = to_array(a, "a"), to_array(b, "b")
    _same_size(x, y)
    return float(np.abs(x - y).mean() / 255.0)
