"""Interpolation between latents and between prompt embeddings: slerp, lerp and frame schedules.

Gaussian noise in many dimensions lives near a sphere: almost every sample has a norm close
to sqrt(number of elements). A straight line (lerp) between two such samples cuts through
the inside of that sphere, where the norm is too small (about 0.71 of it half way between
two independent samples), and the UNet has never seen such a quiet latent.
Spherical interpolation (slerp) walks along the sphere instead, so every frame is a
plausible noise sample.

>>> import torch
>>> a, b = torch.randn(4, 8, 8), torch.randn(4, 8, 8)
>>> frames = slerp_frames(a, b, 5)
>>> len(frames), torch.equal(frames[0], a), torch.equal(frames[-1], b)
(5, True, True)
"""
from __future__ import annotations

import torch

from .validate import check_interpolation, check_num_frames, check_pair, check_render_inputs


def lerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Straight-line interpolation ``(1 - t) * v0 + t * v1`` (same shape and dtype as the inputs)."""
    t = check_interpolation(t, v0, v1)  # t in [0, 1]; v0, v1 of one shape
    if t == 0.0:  # the ends exactly, not up to rounding
        return v0.clone()
    if t == 1.0:
        return v1.clone()
    return ((1 - t) * v0.double() + t * v1.double()).to(v0.dtype)  # in float64, back to v0's dtype


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation between ``v0`` (t = 0) and ``v1`` (t = 1), treating each tensor as one vector.

    The angle ``theta`` between the two flattened tensors is split in the ratio t : 1 - t:
    ``sin((1 - t) theta) / sin(theta) * v0 + sin(t theta) / sin(theta) * v1``.
    For tensors of equal norm the result keeps that norm. When the two directions are nearly
    parallel (cosine above ``dot_threshold``) sin(theta) is close to 0 and the formula is
    ill-conditioned, so it falls back to :func:`lerp`, which is then almost the same path.
    Computed in float64; returns the dtype and shape of ``v0``.

    >>> import torch
    >>> a, b = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    >>> slerp(0.5, a, b).shape
    torch.Size([1, 4, 8, 8])
    """
    t = check_interpolation(t, v0, v1, dot_threshold)  # t in [0, 1]; v0, v1 of one shape
    if t == 0.0:  # the ends exactly, not up to rounding
        return v0.clone()
    if t == 1.0:
        return v1.clone()
    a, b = v0.double().flatten(), v1.double().flatten()  # each tensor as one long vector, in float64
    na, nb = a.norm(), b.norm()  # their lengths
    if na == 0 or nb == 0:
        raise ValueError("cannot slerp a tensor of norm 0: the angle to it is undefined")
    dot = torch.dot(a / na, b / nb).clamp(-1.0, 1.0)  # cosine of the angle between them
    if dot < -dot_threshold:
        raise ValueError(f"v0 and v1 point in opposite directions (cosine {float(dot):.4f}): every great circle "
                         f"joins them, so slerp has no single path (and lerp would pass through 0); "
                         f"use a third tensor as a stop on the way (slerp_path).")
    if dot > dot_threshold:  # nearly parallel: sin(theta) ~ 0, and the straight line is as good
        return lerp(t, v0, v1)
    theta = torch.arccos(dot)  # the angle between v0 and v1
    sin_theta = torch.sin(theta)
    out = (torch.sin((1 - t) * theta) / sin_theta) * a + (torch.sin(t * theta) / sin_theta) * b  # t of the arc
    return out.reshape(v0.shape).to(v0.dtype)  # back to v0's shape and dtype


def frame_times(num_frames: int) -> list[float]:
    """``num_frames`` evenly spaced interpolation weights from 0 to 1, both ends included.

    >>> frame_times(5)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    n = check_num_frames(num_frames)
    return [i / (n - 1) for i in range(n)]


def slerp_frames(v0: torch.Tensor, v1: torch.Tensor, num_frames: int,
                 dot_threshold: float = 0.9995) -> list[torch.Tensor]:
    """The ``num_frames`` tensors ``slerp(t, v0, v1)`` for t evenly spaced from 0 to 1 (first is v0, last is v1)."""
    check_pair(v0, v1)
    return [slerp(t, v0, v1, dot_threshold) for t in frame_times(num_frames)]


def lerp_frames(v0: torch.Tensor, v1: torch.Tensor, num_frames: int) -> list[torch.Tensor]:
    """Like :func:`slerp_frames`, along the straight line."""
    check_pair(v0, v1)
    return [lerp(t, v0, v1) for t in frame_times(num_frames)]


def slerp_path(points: list[torch.Tensor], frames_per_segment: int, loop: bool = False) -> list[torch.Tensor]:
    """A path through several key tensors: ``frames_per_segment`` slerp frames from each to the next.

    Shared endpoints appear once. With ``loop=True`` the path returns to the first point (and
    leaves out the final copy of it, so the video can repeat without a stutter).
    Returns ``(len(points) - 1) * (frames_per_segment - 1) + 1`` tensors, or
    ``len(points) * (frames_per_segment - 1)`` with ``loop``.
    """
    if not isinstance(points, (list, tuple)) or len(points) < 2:
        raise ValueError(f"slerp_path needs a list of at least 2 tensors, got {type(points).__name__} of length "
                         f"{len(points) if hasattr(points, '__len__') else '?'}")
    check_num_frames(frames_per_segment)
    keys = list(points) + ([points[0]] if loop else [])
    out: list[torch.Tensor] = []
    for a, b in zip(keys[:-1], keys[1:]):
        segment = slerp_frames(a, b, frames_per_segment)
        out.extend(segment if not out else segment[1:])
    return out[:-1] if loop else out


def render_frames(pipe, latents, embeddings, steps: int = 20, guidance: float = 7.5, batch_size: int = 8,
                  progress: bool = True) -> list:
    """Denoise and decode one picture per frame with the loop of :mod:`sdcourse.loop`.

    ``latents``: a list of unscaled noise tensors ``(1, 4, h, w)`` (e.g. from :func:`slerp_frames`), one per
    frame; they are multiplied by the scheduler's ``init_noise_sigma`` here. ``embeddings``: one
    ``[uncond, cond]`` tensor ``(2, 77, hidden)`` from :func:`sdcourse.loop.encode_prompt`, shared by
    all frames, or a list with one per frame. Frames are denoised ``batch_size`` at a time (each frame
    is independent: the same result as one by one, up to rounding). Returns a list of PIL pictures.
    """
    from tqdm.auto import tqdm

    from .images import latents_to_pil
    from .loop import denoise, prepare_timesteps

    latents, embeddings, steps = check_render_inputs(latents, embeddings, steps, batch_size)  # lists, one per frame
    device, dtype = pipe.unet.device, pipe.unet.dtype
    frames = []
    for start in tqdm(range(0, len(latents), batch_size), disable=not progress, desc="frames"):
        lat = torch.cat(latents[start : start + batch_size]).to(device, dtype)  # the next batch of frames
        emb = embeddings[start : start + batch_size]
        emb = torch.cat([e[:1] for e in emb] + [e[1:] for e in emb]).to(device, dtype)  # [uncond..., cond...]
        prepare_timesteps(pipe.scheduler, steps, device=device)  # a fresh run of the scheduler per batch
        out = denoise(pipe.unet, pipe.scheduler, emb, lat * pipe.scheduler.init_noise_sigma, guidance, steps,
                      progress=False)  # noise scaled to the first step's level, then the loop
        for one in out.split(1):  # decode one at a time: the VAE decoder is the memory peak at 512 px
            frames.extend(latents_to_pil(pipe.vae, one))
    return frames
