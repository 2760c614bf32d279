"""Seeded random generators: the same seed gives the same starting noise, hence the same picture.

Diffusion starts from random noise; a ``torch.Generator`` with a fixed seed makes that noise,
and so the whole picture, reproducible. Pass it to the pipeline as ``generator=``.

Example::

    >>> g = make_generator(42)
    >>> a = torch.randn(2, generator=g)
    >>> b = torch.randn(2, generator=make_generator(42))
    >>> torch.equal(a, b)
    True
"""
from __future__ import annotations

import torch

from .validate import check_seed


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``seed``.

    A CPU generator (the default) gives the same noise on every machine, so the course's
    pictures can be reproduced on any GPU too: diffusers draws the noise on the generator's
    device and then moves it. A CUDA generator is faster but its numbers differ from the CPU's.

    Example::

        >>> pipe(prompt, generator=make_generator(0)).images[0]  # doctest: +SKIP
        >>> [make_generator(s) for s in range(4)]   # one generator per picture of a batch  # doctest: +SKIP
    """
    seed = check_seed(seed)
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
    return torch.Generator(device=dev).manual_seed(seed)
