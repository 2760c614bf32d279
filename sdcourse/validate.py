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

import numbers

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts seeds up to this value


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_size(height, width, multiple: int = 8) -> tuple[int, int]:
    """Check a picture size in pixels and return it as ``(height, width)``.

    Both must be positive integers divisible by ``multiple`` (8 for Stable Diffusion: the
    VAE shrinks each side 8 times, so a latent pixel covers an 8 x 8 block).

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


def check_prompts(prompts) -> list[str]:
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
            f"prompts must be a string or a list of strings; got {prompts!r} of type "
            f"{type(prompts).__name__}."
        )
    if len(prompts) == 0:
        raise ValueError("prompts is an empty list; give at least one prompt, e.g. ['a red circle'].")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(
                f"every prompt must be a string; prompt {i} is {prompt!r} of type {type(prompt).__name__}."
            )
    return list(prompts)
