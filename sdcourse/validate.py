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
from collections.abc import Sequence

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
    return readable_rgb(image, name)


def readable_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """The picture as 8-bit RGB, or ValueError with one sentence on why it cannot be one.

    A file cut short is named (PIL reads pixels only when they are needed, so the damage shows here, not at
    ``Image.open``); 16-bit grey is scaled to 8 bits (a plain ``convert`` would clip it to white); a picture
    with no visible pixel (fully transparent) is refused; CMYK, palette and grey pictures are converted.
    """
    filename = getattr(image, "filename", "") or ""
    where = f"{name} ({filename.replace(chr(92), '/').rsplit('/', 1)[-1]})" if filename else name
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{where} could not be read ({err}): the file is damaged or cut short; save it again "
                         f"or use another picture.") from None
    if image.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit grey, 0-65535
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(pixels / 257), 0, 255).astype(np.uint8), "L")
    if "A" in image.mode or "transparency" in image.info:
        if image.convert("RGBA").getchannel("A").getextrema()[1] == 0:
            raise ValueError(f"{where} is fully transparent: it has no visible pixel to start from; use a "
                             f"picture with something in it.")
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


def check_bool_mask(mask, name: str = "mask") -> np.ndarray:
    """Check a boolean numpy mask ``(height, width)`` with sides from 1 to ``MAX_SIDE``; return it.

    >>> check_bool_mask(np.ones((4, 4), bool)).shape
    (4, 4)
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
        kind = (f"an array of shape {mask.shape} and dtype {mask.dtype}" if isinstance(mask, np.ndarray)
                else type(mask).__name__)
        raise TypeError(f"{name} must be a 2-D numpy array of True/False (e.g. from colour_mask); got {kind}.")
    check_side(mask.shape, f"{name} side")
    return mask


def check_same_pair_size(a: Image.Image, b: Image.Image, names: str = "picture and mask") -> None:
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


def check_writable_file(value, name: str, example: str):
    """Check that the file ``value`` can be written (its folder exists and takes a new file, and it is not a
    folder itself) without touching it; return it as a ``Path``. Done before long work, so a bad output path
    costs no time.

    >>> check_writable_file("grid.png", "grid", "grid.png")
    PosixPath('grid.png')
    """
    import os
    import tempfile

    path = check_path(value, name, example)
    folder = path.parent if str(path.parent) else path.cwd()
    if path.is_dir():
        raise ValueError(f"{name}={str(path)!r} is a folder; give a file name such as {example!r}.")
    if not folder.is_dir():
        raise ValueError(f"{name}={str(path)!r}: its folder {str(folder)!r} does not exist; create it first.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{name}={str(path)!r} cannot be written ({err.strerror or type(err).__name__}); "
                         f"give a path in a folder you can write to.") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name}={str(path)!r} exists and cannot be written; give another path.")
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


# --------------------------------------------------------------------------- whole numbers, pictures in lists
def check_whole(value, name: str, low: int = 0) -> int:
    """Return ``value`` as an ``int`` if it is a whole number >= ``low`` (not a bool), else raise ValueError.

    >>> check_whole(3, "repeats", 1)
    3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}.")
    return int(value)


def check_pictures(images, name: str = "images", empty: str | None = None) -> list[Image.Image]:
    """One PIL picture or a list of them, each non-empty, as a list; ``empty`` is the error for an empty list.

    >>> len(check_pictures(Image.new("RGB", (8, 8))))
    1
    """
    if isinstance(images, Image.Image):
        return [images]
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        raise TypeError(f"{name} must be a PIL image or a list of PIL images; got {type(images).__name__}.")
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            hint = " (use latents_to_pil or tensor_to_pil to turn tensors into pictures)" if torch.is_tensor(im) else ""
            raise TypeError(f"{name}[{i}] is a {type(im).__name__}, not a PIL image{hint}.")
        if im.width == 0 or im.height == 0:
            raise ValueError(f"{name}[{i}] is empty: it is {im.width} x {im.height} pixels.")
    if empty is not None and not images:
        raise ValueError(empty)
    return list(images)


def check_same_size(images: list[Image.Image]) -> tuple[int, int]:
    """The common ``(width, height)`` of a list of pictures; raise if their sizes differ."""
    sizes = sorted({im.size for im in images})
    if len(sizes) > 1:
        raise ValueError(
            f"all pictures must have the same size; got sizes (width, height) {sizes}. "
            f"Resize them first, e.g. im.resize((512, 512))."
        )
    return sizes[0]


def check_grid(images, rows, cols) -> tuple[list[Image.Image], tuple[int, int]]:
    """``image_grid``'s checks: ``rows * cols`` pictures of one size; returns the list and ``(width, height)``."""
    images = check_pictures(images)
    for name, value in (("rows", rows), ("cols", cols)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if not images:
        raise ValueError("image_grid got an empty list of pictures; give at least one.")
    if rows * cols != len(images):
        raise ValueError(
            f"rows x cols must equal the number of pictures: {rows} x {cols} = {rows * cols}, "
            f"but there are {len(images)} pictures."
        )
    return images, check_same_size(images)


def check_layout(images, rows, cols) -> tuple[list[Image.Image], int | None, int | None]:
    """``show``'s checks: at least one picture, and ``rows``/``cols`` (or None) from 1 to the number of pictures."""
    images = check_pictures(images, empty="show got an empty list of pictures; give at least one.")
    rows = None if rows is None else check_int(rows, "rows", 1, len(images))
    cols = None if cols is None else check_int(cols, "cols", 1, len(images))
    return images, rows, cols


def check_vae_pictures(vae, images, factor: int) -> list[Image.Image]:
    """``pil_to_latents``'s checks: at least one picture, all of one size, sides multiples of the VAE ``factor``."""
    images = check_pictures(images, empty="pil_to_latents got an empty list of pictures; give at least one.")
    w, h = check_same_size(images)
    if w % factor or h % factor:
        raise ValueError(f"picture size {w} x {h} must be a multiple of {factor} on each side for this VAE; "
                         f"resize it, e.g. to {w - w % factor or factor} x {h - h % factor or factor}.")
    return images


def check_pixels(pixels) -> torch.Tensor:
    """A ``(B, 3, H, W)`` float tensor of pixels, finite and not empty, else raise.

    >>> check_pixels(torch.zeros(1, 3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """
    if not torch.is_tensor(pixels) or pixels.ndim != 4 or pixels.shape[1] != 3:
        shape = tuple(pixels.shape) if torch.is_tensor(pixels) else type(pixels).__name__
        raise ValueError(f"expected a (B, 3, H, W) tensor of pixels in [-1, 1]; got {shape}.")
    return check_tensor(pixels, "pixels")


def check_device(device) -> torch.device:
    """A device name or ``torch.device`` that torch can use here ('cpu', or a GPU it sees), else raise.

    >>> check_device("cpu")
    device(type='cpu')
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'cpu' or a torch.device; got {device!r}.")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"Unknown device {device!r}; use 'cpu', 'cuda' or 'mps'.") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Unknown device {device!r}; use 'cpu', 'cuda' or 'mps'.")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[dev.type]:
        raise ValueError(f"device {device!r} was asked for, but this machine has no such GPU visible to torch; "
                         f"use 'cpu' (the default, which gives the same noise everywhere).")
    return dev


# --------------------------------------------------------------------------- the sampling loop
def check_text_inputs(tokenizer, text_encoder, prompts, negative=None) -> tuple[list[str], list[str]]:
    """``encode_prompt``'s checks: the two text parts in the right order, prompts, and one negative per prompt.

    ``negative`` None gives ``""`` per prompt (the unconditional text); one string is used for all.
    """
    prompts = check_prompts(prompts)
    if not callable(tokenizer) or not isinstance(getattr(tokenizer, "model_max_length", None), int):
        raise TypeError(f"tokenizer must be a tokenizer such as pipe.tokenizer; got {type(tokenizer).__name__} "
                        f"(are the tokenizer and text_encoder swapped?).")
    if not isinstance(text_encoder, torch.nn.Module):
        raise TypeError(f"text_encoder must be a model such as pipe.text_encoder; got {type(text_encoder).__name__}.")
    if negative is None or isinstance(negative, str):
        return prompts, [negative or ""] * len(prompts)
    negative = check_prompts(negative, "negative")
    if len(negative) != len(prompts):
        raise ValueError(
            f"negative has {len(negative)} prompts but there are {len(prompts)} prompts; "
            "give one negative prompt per prompt, or one string for all."
        )
    return prompts, negative


def check_schedule(scheduler, num_inference_steps=None) -> int:
    """The number of steps a scheduler was just prepared for (``set_timesteps``), else raise.

    Refuses a scheduler set for another number of steps, never set, or one that has already
    stepped since (K-LMS and PNDM keep the past noise predictions of a run: a second run on
    them needs a fresh ``set_timesteps``).
    """
    set_for = getattr(scheduler, "num_inference_steps", None)
    if num_inference_steps is not None:
        num_inference_steps = check_steps(num_inference_steps)
    if set_for is None or num_inference_steps not in (None, set_for):
        n = num_inference_steps or 20
        raise ValueError(f"the scheduler is set for {set_for} steps, not num_inference_steps = {num_inference_steps}; "
                         f"call prepare_timesteps(scheduler, {n}) (or scheduler.set_timesteps({n})) "
                         f"just before the loop.")
    if getattr(scheduler, "step_index", None) is not None or getattr(scheduler, "counter", 0):
        raise ValueError(f"the scheduler has already run steps since its set_timesteps({set_for}) call; it keeps the "
                         f"history of one run, so call prepare_timesteps(scheduler, {set_for}) again before each run.")
    return set_for


def check_denoise_inputs(unet, scheduler, text_embeddings, latents, guidance_scale, num_inference_steps,
                         callback, start_step) -> tuple[float, int]:
    """``denoise``'s checks; returns ``(guidance_scale, num_inference_steps)`` (the steps the scheduler is set for)."""
    guidance_scale = check_guidance(guidance_scale)
    if num_inference_steps is not None:
        num_inference_steps = check_steps(num_inference_steps)
    check_tensor(latents, "latents", ndim=4, channels=unet.config.in_channels)
    check_tensor(text_embeddings, "text_embeddings", ndim=3)
    if latents.dtype != unet.dtype:
        raise TypeError(f"latents are {latents.dtype} but the UNet runs in {unet.dtype}; "
                        f"convert them with latents.to(unet.dtype).")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function (step_index, t, latents); got {type(callback).__name__}.")
    batch = latents.shape[0]
    if text_embeddings.shape[0] != 2 * batch:
        raise ValueError(
            f"text_embeddings must have 2 * batch = {2 * batch} rows ([uncond, cond] from encode_prompt) "
            f"for latents of batch {batch}, got shape {tuple(text_embeddings.shape)}."
        )
    steps = num_inference_steps or getattr(scheduler, "num_inference_steps", None) or MAX_STEPS
    if isinstance(start_step, bool) or not isinstance(start_step, int) or not 0 <= start_step < steps:
        raise ValueError(
            f"start_step must be a whole number from 0 to num_inference_steps - 1 = {steps - 1}, got {start_step!r}."
        )
    return guidance_scale, check_schedule(scheduler, num_inference_steps)


# --------------------------------------------------------------------------- img2img, inpainting, frames
def check_picture_run(what: str, image, prompt, steps, guidance, multiple: int = 8):
    """The checks img2img and inpainting share: one picture of the right size, one prompt, steps, guidance.

    Returns ``(image as RGB, [prompt], steps, guidance)``.
    """
    image = check_picture(image, multiple)
    steps, guidance = check_steps(steps), check_guidance(guidance)
    prompts = check_prompts(prompt)
    if len(prompts) != 1:
        raise ValueError(f"{what} takes one prompt for its one picture, got {len(prompts)}")
    return image, prompts, steps, guidance


def check_img2img_inputs(image, prompt, strength, steps, guidance, multiple: int = 8):
    """``img2img``'s checks; returns ``(image as RGB, [prompt], strength, steps, guidance)``."""
    strength = check_strength(strength)
    image, prompts, steps, guidance = check_picture_run("img2img", image, prompt, steps, guidance, multiple)
    return image, prompts, strength, steps, guidance


def check_render_inputs(latents, embeddings, steps, batch_size) -> tuple[list, list, int]:
    """``render_frames``'s checks: one ``(1, 4, h, w)`` latent per frame and one ``(2, tokens, hidden)``
    embedding per frame (or one for all). Returns ``(latents, embeddings, steps)`` with the lists expanded."""
    steps = check_steps(steps)
    if torch.is_tensor(latents) or not isinstance(latents, (list, tuple)):
        shape = f" of shape {tuple(latents.shape)}" if torch.is_tensor(latents) else ""
        raise TypeError(f"latents must be a list of (1, 4, h, w) tensors, one per frame; got a "
                        f"{type(latents).__name__}{shape} (a batch splits with list(latents.split(1))).")
    latents = list(latents)
    if len(latents) < 1:
        raise ValueError("render_frames needs at least one latent tensor")
    if isinstance(embeddings, torch.Tensor):
        embeddings = [embeddings] * len(latents)
    if not isinstance(embeddings, (list, tuple)):
        raise TypeError(f"embeddings must be a tensor from encode_prompt or a list of them; "
                        f"got {type(embeddings).__name__}.")
    embeddings = list(embeddings)
    if len(embeddings) != len(latents):
        raise ValueError(f"got {len(latents)} latents but {len(embeddings)} embeddings; "
                         f"give one per frame or one for all")
    for i, (lat, emb) in enumerate(zip(latents, embeddings)):
        check_tensor(lat, f"latents[{i}]")
        check_tensor(emb, f"embeddings[{i}]")
        if lat.ndim != 4 or lat.shape[0] != 1 or lat.shape[1:] != latents[0].shape[1:]:
            raise ValueError(f"latents[{i}] must have shape {tuple(latents[0].shape)} like latents[0], "
                             f"got {tuple(lat.shape)}")
        if emb.ndim != 3 or emb.shape[0] != 2 or emb.shape[1:] != embeddings[0].shape[1:]:
            raise ValueError(f"embeddings[{i}] must be an [uncond, cond] tensor of shape (2, tokens, hidden), "
                             f"got {tuple(emb.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return latents, embeddings, steps


def _mask_values(mask) -> np.ndarray:
    """The mask as an H x W float array in [0, 1]."""
    if isinstance(mask, Image.Image):
        return np.asarray(readable_rgb(mask, "mask").convert("L"), dtype=np.float64) / 255.0
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


def check_mask(mask, image, strict: bool = False, threshold: float = 0.5) -> np.ndarray:
    """An inpainting mask as H x W grey levels in [0, 1], checked against its picture; else raise.

    ``mask``: a PIL picture, or an H x W array or tensor (bool, uint8 0..255, float 0..1) of the
    picture's size, with at least one pixel >= ``threshold`` (white = repaint); with ``strict``,
    no grey pixel at all.

    >>> check_mask(Image.new("L", (8, 8), 255), Image.new("RGB", (8, 8))).shape
    (8, 8)
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
                         f"(use strict=False to threshold them at {threshold})")
    if not (values >= threshold).any():
        raise ValueError("the mask is all black: nothing to repaint (white marks the part to repaint)")
    return values


def check_pixel_mask(mask, factor: int) -> int:
    """Check a ``(1, 1, H, W)`` mask (from ``prepare_mask``) with sides multiples of ``factor``; return the factor."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[:2] != (1, 1):
        raise ValueError(f"mask must be a (1, 1, H, W) tensor from prepare_mask, got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    f = int(factor)
    if mask.shape[-1] % f or mask.shape[-2] % f:
        raise ValueError(f"mask sides must be multiples of {f}, got {mask.shape[-1]}x{mask.shape[-2]}")
    return f


# --------------------------------------------------------------------------- timing, the fast loop, motion
def check_timing(fn, repeats, warmup) -> tuple[int, int]:
    """``time_call``'s checks: a function to call, ``repeats`` >= 1 and ``warmup`` >= 0; returns the two counts."""
    repeats, warmup = check_whole(repeats, "repeats", 1), check_whole(warmup, "warmup", 0)
    if not callable(fn):
        raise TypeError(f"fn must be a function taking no arguments, got {type(fn).__name__}.")
    return repeats, warmup


def check_lms_scheduler(scheduler, order) -> int:
    """``lms_coefficients``' checks: an ``LMSDiscreteScheduler`` and an order >= 1; returns the order."""
    from diffusers import LMSDiscreteScheduler

    order = check_whole(order, "order", 1)
    if not isinstance(scheduler, LMSDiscreteScheduler):
        raise ValueError("lms_coefficients needs an LMSDiscreteScheduler after set_timesteps(steps), got "
                         f"{type(scheduler).__name__}.")
    return order


def check_finite_number(value, name: str, frame="-") -> float:
    """A finite real number (not a bool) as a float; ``frame`` names the animation frame in the error.

    >>> check_finite_number(1.5, "zoom")
    1.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        where = "" if frame == "-" else f" at frame {frame}"
        raise ValueError(f"{name}{where} must be a finite number, got {value!r}")
    return float(value)


def check_motion(image, zoom, angle, translate_x, translate_y) -> tuple[float, float, float, float]:
    """``transform``'s checks: a PIL picture, finite numbers, a positive zoom; returns the four numbers."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL picture, got {type(image).__name__}")
    numbers_ = [check_finite_number(v, n) for v, n in
                ((zoom, "zoom"), (angle, "angle"), (translate_x, "translate_x"), (translate_y, "translate_y"))]
    if numbers_[0] <= 0:
        raise ValueError(f"zoom must be positive (1 keeps the size, 1.05 zooms in 5%), got {numbers_[0]}")
    return tuple(numbers_)


def check_animation(init_image, num_frames, seed) -> int:
    """``animate``'s checks: a PIL start picture, at least 2 frames, and a seed + frame index that fits."""
    n = check_num_frames(num_frames)
    if not isinstance(init_image, Image.Image):
        raise TypeError(f"init_image must be a PIL picture, got {type(init_image).__name__}")
    if check_seed(seed) + n - 1 > MAX_SEED:
        raise ValueError(f"seed {seed} is too large: frame i uses seed + i, so seed must be at most "
                         f"2**64 - 1 - (num_frames - 1) = {MAX_SEED - n + 1}")
    return n


def check_interpolation(t, v0, v1, dot_threshold=None) -> float:
    """``lerp``'s and ``slerp``'s checks: t in [0, 1], two finite tensors of one shape, a threshold in (0, 1].

    Returns ``t`` as a float.

    >>> check_interpolation(0.5, torch.zeros(2), torch.ones(2))
    0.5
    """
    if isinstance(t, torch.Tensor) and t.numel() == 1:
        t = t.item()
    t = check_number(t, "t", 0.0, 1.0, example=0.5)
    check_pair(v0, v1)
    if dot_threshold is not None and (isinstance(dot_threshold, bool) or not isinstance(dot_threshold, numbers.Real)
                                      or not 0 < dot_threshold <= 1):
        raise ValueError(f"dot_threshold must be a number in (0, 1], got {dot_threshold!r}")
    return t


def check_pair(v0, v1) -> None:
    """Two finite float tensors of the same shape (the ends of an interpolation), else raise."""
    for name, v in (("v0", v0), ("v1", v1)):
        check_tensor(v, name)
    if v0.shape != v1.shape:
        raise ValueError(
            f"cannot interpolate tensors of different shapes: v0 is {tuple(v0.shape)}, v1 is {tuple(v1.shape)}"
        )
