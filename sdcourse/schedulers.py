"""Swap the sampler of a pipeline by name: PNDM, DDIM, K-LMS, Euler, DPM-Solver++.

Every scheduler here is built with ``Cls.from_config(pipe.scheduler.config)``, so it
inherits the noise schedule the model was trained with (``beta_start``, ``beta_end``,
``beta_schedule``, ``prediction_type``, ``timestep_spacing``...). Only the *solver*
changes: how the next, less noisy latent is computed from the UNet's noise prediction.

>>> from sdcourse.schedulers import make_scheduler
>>> pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)

# Canonical name -> (class, extra config). The extra config is applied on top of the
# pipeline's own scheduler config.
SCHEDULERS: dict[str, tuple[type, dict]] = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "klms": (LMSDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}
# Other spellings people use for the same samplers.
ALIASES: dict[str, str] = {"lms": "klms", "k-lms": "klms", "dpmsolver++": "dpm++", "dpm-solver++": "dpm++"}


def scheduler_names() -> list[str]:
    """The canonical scheduler names, in the order the course shows them.

    >>> scheduler_names()
    ['pndm', 'ddim', 'klms', 'euler', 'dpm++']
    """
    return list(SCHEDULERS)


def canonical_name(name: str) -> str:
    """The canonical spelling of a scheduler name (``"LMS"`` -> ``"klms"``); unknown names raise ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"a scheduler name must be a string, got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in SCHEDULERS:
        known = ", ".join(list(SCHEDULERS) + list(ALIASES))
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {known}")
    return key


def make_scheduler(name: str, config):
    """A fresh scheduler of kind ``name`` with the noise schedule of ``config``.

    ``config`` is a scheduler config (``pipe.scheduler.config``), a scheduler, or a pipeline.

    >>> make_scheduler("dpm++", pipe.scheduler.config).config.algorithm_type  # doctest: +SKIP
    'dpmsolver++'
    """
    key = canonical_name(name)
    if hasattr(config, "scheduler"):  # a pipeline
        config = config.scheduler
    if hasattr(config, "config") and not isinstance(config, dict):  # a scheduler
        config = config.config
    if not hasattr(config, "keys"):
        raise TypeError(
            f"config must be a scheduler config (pipe.scheduler.config), a scheduler or a pipeline, "
            f"got {type(config).__name__}"
        )
    cls, extra = SCHEDULERS[key]
    return cls.from_config(config, **extra)


def set_scheduler(pipe, name: str):
    """Replace ``pipe.scheduler`` by the scheduler ``name`` (same noise schedule); returns the new scheduler."""
    if not hasattr(getattr(pipe, "scheduler", None), "config"):
        raise TypeError(f"set_scheduler needs a pipeline with a scheduler (pipe); got {type(pipe).__name__}")
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    return pipe.scheduler


def sigma_of_timestep(scheduler, timesteps) -> np.ndarray:
    """The noise level sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t) at each (possibly fractional) timestep.

    sigma is the scale of the noise relative to the picture: a latent at timestep t is
    ``sqrt(alpha_bar_t) * (x0 + sigma_t * noise)``. Every scheduler of one model shares it,
    because they share ``alphas_cumprod``. Returns a float64 array shaped like ``timesteps``.
    """
    alphas = scheduler.alphas_cumprod.double().numpy()
    sigmas = np.sqrt((1 - alphas) / alphas)
    t = np.asarray(torch.as_tensor(timesteps, dtype=torch.float64))
    if t.size and (t.min() < 0 or t.max() > len(alphas) - 1):
        raise ValueError(f"timesteps must lie in [0, {len(alphas) - 1}], got {t.min()}..{t.max()}")
    # Interpolate log(sigma) between the integer timesteps (as the k-diffusion samplers do).
    return np.exp(np.interp(t, np.arange(len(alphas)), np.log(sigmas)))


def noise_schedule(scheduler, num_inference_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The timesteps the scheduler visits for ``num_inference_steps`` steps and their sigmas.

    Calls ``scheduler.set_timesteps`` (so use a scheduler you are not sampling with at the time).
    Returns two float64 arrays of equal length (PNDM visits one timestep twice, so it has one more).
    """
    if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps.double().numpy()
    return timesteps, sigma_of_timestep(scheduler, timesteps)


class UNetCallCounter:
    """Counts the UNet's forward calls inside a ``with`` block (one call per batched evaluation).

    >>> with UNetCallCounter(pipe.unet) as counter:  # doctest: +SKIP
    ...     pipe("a red circle", num_inference_steps=10)
    >>> counter.calls  # doctest: +SKIP
    10
    """

    def __init__(self, unet: torch.nn.Module):
        if not isinstance(unet, torch.nn.Module):
            raise TypeError(f"UNetCallCounter needs a torch module (pipe.unet), got {type(unet).__name__}")
        self.unet = unet
        self.calls = 0
        self._handle = None

    def _hook(self, module, args, output):
        self.calls += 1

    def __enter__(self):
        self.calls = 0
        self._handle = self.unet.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        self._handle = None
        return False


SD_GUIDANCE = 7.5  # StableDiffusionPipeline's default guidance_scale
MINI_KLMS_GUIDANCE = 2.0  # the mini model's K-LMS pictures fall apart above it (chapter 5 shows why)


def klms_guidance(pipe) -> float:
    """The guidance scale at which chapter 4 samples ``pipe`` with K-LMS: SD's 7.5, but 2.0 for the bundled mini
    model, whose sampling equation at 7.5 is too stiff for K-LMS's steps (its own sampler, DDIM, is fine at 7.5).

    Example: ``klms_guidance(sdcourse.load_pipeline("mini"))`` is 2.0.
    """
    from .loader import is_mini_model

    return MINI_KLMS_GUIDANCE if is_mini_model(pipe) else SD_GUIDANCE
