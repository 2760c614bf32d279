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

from .validate import check_device, check_seed


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``seed``.

    A CPU generator (the default) gives the same noise on every machine, so the course's
    pictures can be reproduced on any GPU too: diffusers draws the noise on the generator's
    device and then moves it. A CUDA generator is faster but its numbers differ from the CPU's.

    Example::

        >>> pipe(prompt, generator=make_generator(0)).images[0]  # doctest: +SKIP
        >>> [make_generator(s) for s in range(4)]   # one generator per picture of a batch  # doctest: +SKIP
    """
    seed, device = check_seed(seed), check_device(device)  # 0 .. 2**64 - 1; a device torch sees here
    return torch.Generator(device=device).manual_seed(seed)  # the same seed, the same numbers
