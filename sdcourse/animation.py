"""2D animation by img2img feedback (the idea behind Deforum's 2D mode).

Each new frame is the previous one, moved a little (zoomed, rotated, shifted), then repainted
by img2img at a modest strength. The move makes the camera travel; img2img fills in what the
move revealed and pulls the picture back towards the prompt. Every motion parameter is a
*schedule*: one value per frame, given as

* a number: the same every frame, e.g. ``zoom=1.03``;
* a list with one value per frame;
* keyframes ``{frame: value}``: straight lines between them, held flat before the first and
  after the last, e.g. ``strength={0: 0.6, 15: 0.35}``;
* a function of the frame index, e.g. ``angle=lambda i: 2 * math.sin(i / 4)``.

Translations are fractions of the picture's width/height per frame, so the same schedule moves
a 64 px and a 512 px picture alike.

>>> frames = animate(pipe, picture, "a red circle", num_frames=12, zoom=1.04, angle=2.0)  # doctest: +SKIP
>>> len(frames)  # doctest: +SKIP
12
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .images import pil_to_tensor, tensor_to_pil
from .img2img import img2img
from .validate import (check_animation, check_finite_number, check_motion, check_num_frames, check_strength,
                       readable_rgb)

# name -> (lowest, highest) value a schedule may take, per frame
LIMITS = {
    "zoom": (0.5, 2.0),
    "angle": (-45.0, 45.0),
    "translate_x": (-0.5, 0.5),
    "translate_y": (-0.5, 0.5),
    "strength": (0.0, 1.0),
}


def schedule(values, num_frames: int, name: str = "schedule", limits: tuple[float, float] | None = None) -> list[float]:
    """Expand a schedule (number, list, ``{frame: value}`` keyframes, or function) to one float per frame.

    ``limits`` = ``(low, high)`` bounds every value; a value outside gets a ValueError naming the frame.

    >>> schedule({0: 0.0, 4: 1.0}, 5)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> schedule(2, 3)
    [2.0, 2.0, 2.0]
    """
    n = check_num_frames(num_frames)
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{name} keyframes are empty; give at least one {{frame: value}}")
        keys = sorted(values)
        for k in keys:
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < n:
                raise ValueError(f"{name} keyframe {k!r} must be a frame index from 0 to {n - 1}")
        points = [(int(k), check_finite_number(values[k], name, k)) for k in keys]
        out = []
        for i in range(n):
            if i <= points[0][0]:
                out.append(points[0][1])
            elif i >= points[-1][0]:
                out.append(points[-1][1])
            else:
                (f0, v0), (f1, v1) = next((a, b) for a, b in zip(points, points[1:]) if a[0] <= i <= b[0])
                out.append(v0 + (v1 - v0) * (i - f0) / (f1 - f0))
    elif callable(values):
        out = [check_finite_number(values(i), name, i) for i in range(n)]
    elif isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} values but there are {n} frames; give one value per frame")
        out = [check_finite_number(v, name, i) for i, v in enumerate(values)]
    elif isinstance(values, numbers.Real) and not isinstance(values, bool):
        out = [check_finite_number(values, name, "every")] * n
    else:
        raise TypeError(f"{name} must be a number, a list, a {{frame: value}} dict or a function, "
                        f"got {type(values).__name__}")
    if limits is not None:
        low, high = limits
        for i, v in enumerate(out):
            if not low <= v <= high:
                raise ValueError(f"{name} at frame {i} is {v}; it must lie in [{low}, {high}]")
    return out


def prompt_schedule(prompts, num_frames: int) -> list[str]:
    """One prompt per frame from a string (all frames) or ``{frame: prompt}`` (each held until the next key).

    >>> prompt_schedule({0: "a red circle", 2: "a blue square"}, 4)
    ['a red circle', 'a red circle', 'a blue square', 'a blue square']
    """
    n = check_num_frames(num_frames)
    if isinstance(prompts, str):
        if not prompts.strip():
            raise ValueError("the prompt is empty")
        return [prompts] * n
    if not isinstance(prompts, Mapping) or not prompts:
        raise TypeError(f"prompts must be a string or a non-empty {{frame: prompt}} dict, got {prompts!r}")
    keys = sorted(prompts)
    if keys[0] != 0:
        raise ValueError(f"the prompt keyframes must start at frame 0, got {keys[0]!r}")
    for k in keys:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < n:
            raise ValueError(f"prompt keyframe {k!r} must be a frame index from 0 to {n - 1}")
        if not isinstance(prompts[k], str) or not prompts[k].strip():
            raise ValueError(f"the prompt at frame {k} must be a non-empty string, got {prompts[k]!r}")
    return [prompts[max(k for k in keys if k <= i)] for i in range(n)]


def transform(image: Image.Image, zoom: float = 1.0, angle: float = 0.0, translate_x: float = 0.0,
              translate_y: float = 0.0) -> Image.Image:
    """Move a picture like a 2D camera: zoom in (``zoom`` > 1), rotate ``angle`` degrees anticlockwise,
    shift by ``translate_x``/``translate_y`` of its width/height (positive: content moves right/down).

    Bilinear resampling; pixels that come from outside the picture are mirrored back in
    (``padding_mode="reflection"``), so the borders get plausible content rather than black.
    Returns a picture of the same size and mode RGB.
    """
    zoom, angle, tx, ty = check_motion(image, zoom, angle, translate_x, translate_y)  # finite; zoom > 0
    x = pil_to_tensor(image.convert("RGB"))  # (1, 3, H, W) in [-1, 1]
    a = math.radians(angle)
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom  # rotation and zoom in one 2 x 2 matrix
    # affine_grid maps each output position (normalised to [-1, 1]) to where it samples the input:
    # undo the shift, then rotate back and shrink by the zoom. The image y axis points down, so
    # an anticlockwise turn on screen is a clockwise one in these coordinates.
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float32)
    shift = torch.tensor([2 * tx, 2 * ty], dtype=torch.float32)
    theta[:, 2] = -(theta[:, :2] @ shift)  # the shift, seen through the rotation and zoom
    grid = F.affine_grid(theta[None], list(x.shape), align_corners=False)  # where each output pixel samples
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)  # mirror at edges
    return tensor_to_pil(y)[0]


def animate(pipe, init_image: Image.Image, prompt, num_frames: int, *, zoom=1.0, angle=0.0, translate_x=0.0,
            translate_y=0.0, strength=0.5, steps: int = 20, guidance: float = 7.5, seed: int = 0,
            progress: bool = True, callback: Callable[[int, Image.Image], None] | None = None) -> list[Image.Image]:
    """Make ``num_frames`` frames: frame 0 is ``init_image``; frame i is frame i-1, moved, then img2img'd.

    ``prompt`` is a string or ``{frame: prompt}``; ``zoom``, ``angle`` (degrees), ``translate_x``,
    ``translate_y`` (fractions of the size) and ``strength`` are schedules (see :func:`schedule`):
    the values at frame i move frame i-1 into frame i. Frame i uses seed ``seed + i``, so the
    noise changes from frame to frame. ``init_image`` must have the model's size, sides multiples
    of ``pipe.vae_scale_factor``. Returns a list of ``num_frames`` PIL pictures.
    """
    n = check_animation(init_image, num_frames, seed)  # a picture, >= 2 frames, seed + n - 1 in range
    prompts = prompt_schedule(prompt, n)  # one prompt per frame
    motion = {name: schedule(value, n, name, LIMITS[name]) for name, value in
              (("zoom", zoom), ("angle", angle), ("translate_x", translate_x), ("translate_y", translate_y))}
    strengths = [check_strength(s) for s in schedule(strength, n, "strength", LIMITS["strength"])]
    frames = [readable_rgb(init_image, "init_image")]  # frame 0 is the start picture itself, as 8-bit RGB
    for i in tqdm(range(1, n), disable=not progress, desc="frames"):
        moved = transform(frames[-1], motion["zoom"][i], motion["angle"][i], motion["translate_x"][i],
                          motion["translate_y"][i])  # the camera moves
        frames.append(img2img(pipe, moved, prompts[i], strength=strengths[i], steps=steps, guidance=guidance,
                              seed=seed + i).images[0])  # img2img repaints what the move revealed
        if callback is not None:
            callback(i, frames[-1])
    return frames
