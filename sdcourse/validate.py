"""Checks at the door: bad arguments get a sentence that names the value, not a traceback deep inside.

Like ``StableDiffusionPipeline.check_inputs`` in diffusers, each check raises ``ValueError``
(a value of the right kind but out of range) or ``TypeError`` (the wrong kind of value), and
returns the cleaned value so it can be used inline.

Example::

    >>> from sdcourse.validate import check_size, check_seed, check_prompts
    >>> check_size(64, 64)
    (64, 64)
    >>> check_prompts("a red circle")
    ['a red circle']
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from PIL import Image

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts seeds up to this value
MAX_SIDE = 2048  # pixels per side; SD v1.x was trained at 512, and 2048 x 2048 already needs minutes per step
MAX_STEPS = 1000  # the number of training timesteps of SD's schedulers: more steps than that repeat timesteps
MAX_GUIDANCE = 100.0  # far above any useful value (7.5 is usual); much larger values overflow to NaN


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_size(height, width, multiple: int = 8) -> tuple[int, int]:
    """Check a picture size in pixels and return it as ``(height, width)``.

    Both must be positive integers divisible by ``multiple`` (8 for Stable Diffusion: the
    VAE shrinks each side 8 times, so a latent pixel covers an 8 x 8 block) and at most
    ``MAX_SIDE`` (2048) pixels. numpy integers are accepted.

    Example::

        >>> check_size(512, 768)
        (512, 768)
    """
    for name, value in (("height", height), ("width", width)):
        if not _is_int(value):
            raise TypeError(
                f"{name} must be an integer number of pixels such as 512; got {value!r} "
                f"of type {type(value).__name__}."
            )
        if value <= 0 or value % multiple:
            raise ValueError(
                f"{name} must be a positive multiple of {multiple} (e.g. {multiple * 8} or "
                f"{multiple * 64}); got {value}."
            )
        if value > MAX_SIDE:
            raise ValueError(f"{name} must be at most {MAX_SIDE} pixels (SD v1.x was trained at 512); got {value}.")
    return int(height), int(width)


def check_seed(seed) -> int:
    """Check a random seed: an integer from 0 to 2**64 - 1. Returns it as an ``int``.

    Example::

        >>> check_seed(42)
        42
    """
    if not _is_int(seed):
        raise TypeError(
            f"seed must be a whole number from 0 to 2**64 - 1, such as 0 or 1234; got {seed!r} "
            f"of type {type(seed).__name__}."
        )
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and 2**64 - 1; got {seed}.")
    return int(seed)


def check_prompts(prompts, name: str = "prompts") -> list[str]:
    """Check one prompt or a list of prompts and return them as a non-empty list of strings.

    A single string becomes a one-element list. The empty string is a valid prompt (it is
    the "unconditional" prompt of classifier-free guidance); an empty list is not.

    Example::

        >>> check_prompts(["a red circle", "a blue square"])
        ['a red circle', 'a blue square']
    """
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(
            f"{name} must be a string or a list of strings; got {prompts!r} of type "
            f"{type(prompts).__name__}."
        )
    if len(prompts) == 0:
        raise ValueError(f"{name} is an empty list; give at least one prompt, e.g. ['a red circle'].")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(
                f"every prompt must be a string; {name}[{i}] is {prompt!r} of type {type(prompt).__name__}."
            )
    return list(prompts)


def check_prompt(prompt, name: str = "prompt") -> str:
    """Check one prompt: a string (or a list holding exactly one). Returns the string.

    >>> check_prompt("a red circle")
    'a red circle'
    """
    prompts = check_prompts(prompt, name)
    if len(prompts) != 1:
        raise ValueError(f"{name} must be one prompt (a string); got a list of {len(prompts)}.")
    return prompts[0]


# --------------------------------------------------------------------------- numbers


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


def check_int(value, name: str, low: int | None = None, high: int | None = None, example: int | None = None,
              meaning: str = "") -> int:
    """Check that ``value`` is a whole number (numpy integers too) in ``[low, high]``; return it as an ``int``.

    >>> check_int(3, "rows", low=1)
    3
    """
    if not _is_int(value):
        hint = f" such as {example}" if example is not None else ""
        raise TypeError(f"{name} must be a whole number{hint}; got {value!r} of type {type(value).__name__}.")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_bounds(low, high)}{meaning}, got {value}")
    return value


def check_number(value, name: str, low: float | None = None, high: float | None = None,
                 example: float | None = None, meaning: str = "") -> float:
    """Check that ``value`` is a finite real number (numpy floats too) in ``[low, high]``; return a ``float``.

    >>> check_number(0.5, "t", 0, 1)
    0.5
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not _is_number(value):
        hint = f" such as {example}" if example is not None else ""
        raise TypeError(f"{name} must be a number{hint}; got {value!r} of type {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = "finite" if low is None and high is None else _bounds(low, high)
        raise ValueError(f"{name} must be {bounds}{meaning}, got {value:g}")
    return value


def check_guidance(guidance_scale) -> float:
    """Return ``guidance_scale`` as a float from 0 to 100 (1 means no guidance, 7.5 is usual), else raise.

    >>> check_guidance(7.5)
    7.5
    """
    return check_number(guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE, example=7.5,
                        meaning=" (1 means no guidance, 7.5 is usual)")


def check_steps(num_inference_steps) -> int:
    """Return ``num_inference_steps`` if it is a whole number from 1 to 1000, else raise.

    >>> check_steps(20)
    20
    """
    return check_int(num_inference_steps, "num_inference_steps", 1, MAX_STEPS, example=20)


def check_strength(strength) -> float:
    """Return ``strength`` as a float in [0, 1] (0 keeps the picture, 1 starts from noise), else raise.

    >>> check_strength(0.75)
    0.75
    """
    return check_number(strength, "strength", 0.0, 1.0, example=0.6,
                        meaning=" (0 keeps the picture, 1 starts from almost pure noise)")


def check_num_frames(num_frames) -> int:
    """Return a frame count: a whole number of at least 2 (a video needs a first and a last frame).

    >>> check_num_frames(16)
    16
    """
    return check_int(num_frames, "num_frames", 2, example=16, meaning=" (a first and a last frame)")


def check_fps(fps) -> float:
    """Return frames per second: a number above 0 and at most 60.

    >>> check_fps(8)
    8.0
    """
    fps = check_number(fps, "fps", 0.0, 60.0, example=8)
    if fps == 0:
        raise ValueError("fps must be above 0; got 0.")
    return fps


# --------------------------------------------------------------------------- tensors
def check_tensor(value, name: str, ndim: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Check a floating-point tensor: its kind, rank, channel count (dim 1), no empty side and no NaN/inf.

    >>> check_tensor(torch.zeros(1, 4, 8, 8), "latents", ndim=4, channels=4).shape
    torch.Size([1, 4, 8, 8])
    """
    if not torch.is_tensor(value):
        hint = " (turn it into one with torch.from_numpy)" if isinstance(value, np.ndarray) else ""
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}{hint}.")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {value.dtype}.")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {tuple(value.shape)}.")
    if channels is not None and value.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dimension 1); got shape {tuple(value.shape)}.")
    if value.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(value.shape)} has a side of length 0.")
    check_finite(value, name)
    return value


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if a tensor holds NaN or infinity (which would silently become a black picture).

    >>> check_finite(torch.ones(2), "x")
    tensor([1., 1.])
    """
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s) of {value.numel()}; "
                         f"a picture made from them would be meaningless (black).")
    return value


# --------------------------------------------------------------------------- pictures
def check_picture(image, multiple: int = 8, name: str = "image") -> Image.Image:
    """Check a PIL picture whose sides are positive multiples of ``multiple`` (at most ``MAX_SIDE``); return it as RGB.

    >>> check_picture(Image.new("RGB", (64, 48))).size
    (64, 48)
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name} must be a PIL picture, got {type(image).__name__}")
    w, h = image.size
    if w == 0 or h == 0 or w % multiple or h % multiple or max(w, h) > MAX_SIDE:
        raise ValueError(f"the picture is {w}x{h}; both sides must be positive multiples of {multiple}, "
                         f"at most {MAX_SIDE} (resize it to the model's size first)")
    return image.convert("RGB")


# --------------------------------------------------------------------------- words, choices, objects
def check_text(value, name: str, example: str = "a red circle") -> str:
    """Check that ``value`` is a string (a prompt, a word, a title); return it.

    >>> check_text("a red circle", "prompt")
    'a red circle'
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as {example!r}; got {value!r} of type {type(value).__name__}.")
    return value


def check_choice(value, name: str, choices, labels: dict | None = None):
    """Check that ``value`` is one of ``choices``; ``labels`` (``{value: shown name}``) make the list readable.

    >>> check_choice("ddim", "scheduler", ["pndm", "ddim"])
    'ddim'
    """
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(f"{c!r} ({labels[c]})" if labels and c in labels else repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}.")
    return value


def check_instance(value, name: str, kind, what: str):
    """Check that ``value`` is a ``kind`` (a class or tuple of classes); ``what`` says how to get one.

    >>> check_instance(3, "n", int, "a whole number")
    3
    """
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}; got {type(value).__name__} {_short_repr(value)}.")
    return value


def check_list_of(values, name: str, kind, what: str) -> list:
    """Check a list (or tuple, or other iterable but not a string) whose items are all ``kind``; return a list.

    >>> check_list_of((1, 2), "sizes", int, "a whole number")
    [1, 2]
    """
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list, each item {what}; got {type(values).__name__} {_short_repr(values)}.")
    values = list(values)
    for i, value in enumerate(values):
        check_instance(value, f"{name}[{i}]", kind, what)
    return values


def _short_repr(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_pipeline(pipe, name: str = "pipe", parts=("unet", "vae", "tokenizer", "text_encoder", "scheduler")):
    """Check that ``pipe`` is a Stable Diffusion pipeline (it has a UNet, a VAE, ...); return it.

    >>> check_pipeline(None)
    Traceback (most recent call last):
    ...
    TypeError: pipe must be a Stable Diffusion pipeline such as sdcourse.load_pipeline("mini"); got None.
    """
    missing = [part for part in parts if getattr(pipe, part, None) is None]
    if missing:
        raise TypeError(f'{name} must be a Stable Diffusion pipeline such as sdcourse.load_pipeline("mini"); '
                        f"got {_short_repr(pipe)}" + (f" (it has no {', '.join(missing)})" if pipe is not None else "")
                        + ".")
    return pipe


def check_unet(unet, name: str = "unet"):
    """Check that ``unet`` is a diffusers UNet (``pipe.unet``), not the whole pipeline; return it."""
    config = getattr(unet, "config", None)
    if not hasattr(unet, "attn_processors") or getattr(config, "sample_size", None) is None:
        hint = " (pass pipe.unet, not the pipeline)" if hasattr(unet, "unet") else ""
        raise TypeError(f"{name} must be a diffusers UNet such as pipe.unet{hint}; got {type(unet).__name__}.")
    return unet


def check_literal(value, name: str, example: str) -> str:
    """Check that ``value`` is Python source of a string literal (or ``""`` for none); return it.

    >>> check_literal('"mini"', "model", '"mini"')
    '"mini"'
    """
    import ast

    check_text(value, name, example)
    if value:
        try:
            ok = isinstance(ast.literal_eval(value), str)
        except (ValueError, SyntaxError):
            ok = False
        if not ok:
            raise ValueError(f"{name} must be Python source of a string such as {example} (with the quotes), "
                             f"or '' for none; got {value!r}.")
    return value


def check_index(index, name: str, count: int, what: str) -> int:
    """Check a position among ``count`` things (negative counts from the end, as in Python); return it.

    >>> check_index(0, "index", 2, "prompts")
    0
    """
    if count == 0:
        raise ValueError(f"there are no {what} to pick from with {name}={index!r}.")
    return check_int(index, name, -count, count - 1, example=0, meaning=f" (there are {count} {what})")


# --------------------------------------------------------------------------- maps and masks
def check_side(size, name: str = "size", high: int = MAX_SIDE) -> tuple[int, int]:
    """A size in pixels, one number (a square) or ``(height, width)``, each from 1 to ``high``; as a pair.

    >>> check_side(64)
    (64, 64)
    """
    pair = (size, size) if _is_int(size) else size
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{name} must be a whole number of pixels or a (height, width) pair; got {size!r}.")
    return tuple(check_int(v, name, 1, high, example=64) for v in pair)


def check_mask(mask, name: str = "mask") -> np.ndarray:
    """Check a boolean numpy mask ``(height, width)`` with sides from 1 to ``MAX_SIDE``; return it.

    >>> check_mask(np.ones((4, 4), bool)).shape
    (4, 4)
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
        kind = (f"an array of shape {mask.shape} and dtype {mask.dtype}" if isinstance(mask, np.ndarray)
                else type(mask).__name__)
        raise TypeError(f"{name} must be a 2-D numpy array of True/False (e.g. from colour_mask); got {kind}.")
    check_side(mask.shape, f"{name} side")
    return mask


def check_same_size(a: Image.Image, b: Image.Image, names: str = "picture and mask") -> None:
    """Raise unless two PIL pictures have the same size."""
    if a.size != b.size:
        raise ValueError(f"the {names} must have the same size; got {a.width}x{a.height} and {b.width}x{b.height}.")


def check_upload(upload, knob: str, max_side: int = 2 * MAX_SIDE) -> Image.Image:
    """Open an uploaded file ``{"name": ..., "content": bytes}`` as a PIL picture (not yet decoded); check its size.

    Only the header is read, so a file that claims a huge size is refused before its pixels are decoded.
    """
    if not isinstance(upload, dict) or not isinstance(upload.get("name"), str) \
            or not isinstance(upload.get("content"), (bytes, bytearray, memoryview)):
        keys = sorted(upload) if isinstance(upload, dict) else type(upload).__name__
        raise TypeError(f"the uploaded {knob} must be a dict with 'name' (str) and 'content' (bytes); got {keys}.")
    import io

    name = upload["name"]
    try:
        picture = Image.open(io.BytesIO(bytes(upload["content"])))
    except Image.DecompressionBombError:
        raise ValueError(f"The uploaded {knob} {name!r} is far too large (over {Image.MAX_IMAGE_PIXELS * 2} "
                         f"pixels); use one of at most {max_side} pixels per side.") from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError(f"The uploaded {knob} {name!r} is not a picture (use a PNG or JPEG).") from None
    if max(picture.size) > max_side:
        raise ValueError(f"The uploaded {knob} {name!r} is {picture.width}x{picture.height} pixels; "
                         f"use one of at most {max_side} pixels per side.")
    return picture


# --------------------------------------------------------------------------- files and folders
def check_path(value, name: str, example: str):
    """Check that ``value`` is a path (a ``str`` or ``pathlib.Path``); return it as a ``Path``.

    >>> check_path("notebooks", "source_dir", "notebooks")
    PosixPath('notebooks')
    """
    import os
    from pathlib import Path

    if not isinstance(value, (str, os.PathLike)) or value == "":
        raise TypeError(f"{name} must be a path such as {example!r}; got {value!r}.")
    return Path(value)


def check_writable_dir(value, name: str, example: str):
    """Create the folder ``value`` if needed and check that a file can be written in it; return it as a ``Path``.

    Done before long work (grading a class), so that a bad output folder costs no time.
    """
    import tempfile

    path = check_path(value, name, example)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{name}={str(path)!r} cannot be written ({err.strerror or type(err).__name__}); "
                         f"give a folder you can write to.") from None
    return path


def check_seconds(value, name: str, low: float = 1.0, high: float = 24 * 3600.0) -> float:
    """A time limit in seconds, from ``low`` (1 s) to ``high`` (a day).

    >>> check_seconds(300, "timeout")
    300.0
    """
    return check_number(value, name, low, high, example=300, meaning=" seconds")


def check_weights(weights, n_tokens: int) -> dict:
    """Check ``{token index: factor}`` (prompt-to-prompt re-weighting): indices of the prompt's words
    (1 to ``n_tokens - 2``: 0 is the start token, the last the end token) and finite factors >= 0.
    numpy numbers are accepted. Returns a dict of plain ``int: float``.

    >>> check_weights({2: 3}, n_tokens=5)
    {2: 3.0}
    """
    if weights is None:
        return {}
    if not isinstance(weights, dict):
        raise TypeError(f"weights must be a dict {{token index: factor}} such as {{2: 3.0}}; got {weights!r}.")
    checked = {}
    for token, factor in weights.items():
        token = check_int(token, "weights: token index", example=2)
        if not 1 <= token <= n_tokens - 2:
            raise ValueError(f"weights: token index must be a word of the prompt, 1 to {n_tokens - 2} "
                             f"(find it with token_index); got {token}.")
        checked[token] = check_number(factor, f"weights: factor for token {token}", 0, MAX_GUIDANCE, example=3.0)
    return checked


# --------------------------------------------------------------------------- noise levels
def check_sigma(sigma, scheduler) -> float:
    """Return ``sigma`` as a float if it lies within the noise levels of ``scheduler``'s training schedule.

    sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t) runs from about 0.03 (t = 0) to 14.6 (t = 999) with
    SD's schedule; a noise level outside that range is one the UNet never saw.

    >>> from diffusers import DDIMScheduler
    >>> check_sigma(1, DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    1.0
    """
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if not torch.is_tensor(alphas):
        raise TypeError(f"the scheduler must have a noise schedule (alphas_cumprod), as diffusers' PNDM, DDIM, "
                        f"K-LMS and Euler schedulers do; got {type(scheduler).__name__}.")
    sigmas = ((1 - alphas.double()) / alphas.double()).sqrt()
    return check_number(sigma, "sigma", float(sigmas.min()), float(sigmas.max()), example=1.0,
                        meaning=" (the noise levels of the model's training schedule)")
