"""sdcourse.schedulers: the name -> scheduler registry, noise levels and the UNet call counter."""
import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)

import sdcourse
from sdcourse.schedulers import (
    UNetCallCounter,
    canonical_name,
    make_scheduler,
    noise_schedule,
    scheduler_names,
    set_scheduler,
    sigma_of_timestep,
)


@pytest.fixture(scope="module")
def config():
    return PNDMScheduler.from_pretrained(sdcourse.MINI_MODEL_DIR, subfolder="scheduler").config


@pytest.mark.parametrize("name, cls", [
    ("pndm", PNDMScheduler), ("ddim", DDIMScheduler), ("klms", LMSDiscreteScheduler), ("lms", LMSDiscreteScheduler),
    ("euler", EulerDiscreteScheduler), ("dpm++", DPMSolverMultistepScheduler),
    ("dpmsolver++", DPMSolverMultistepScheduler), ("  Euler ", EulerDiscreteScheduler),
])
def test_make_scheduler_class_and_shared_schedule(config, name, cls):
    s = make_scheduler(name, config)
    assert type(s) is cls
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type", "timestep_spacing"):
        assert s.config[key] == config[key], key
    assert torch.equal(s.alphas_cumprod, PNDMScheduler.from_config(config).alphas_cumprod)


def test_pinned_fields_survive(config):
    # The mini model pins clip_sample false and trailing spacing; DDIM's own default is clip_sample=True.
    assert make_scheduler("ddim", config).config.clip_sample is False
    assert make_scheduler("dpm++", config).config.algorithm_type == "dpmsolver++"
    assert all(make_scheduler(n, config).config.timestep_spacing == "trailing" for n in scheduler_names())


def test_accepts_scheduler_and_pipeline(pipe):
    assert type(make_scheduler("euler", pipe)) is EulerDiscreteScheduler
    assert type(make_scheduler("euler", pipe.scheduler)) is EulerDiscreteScheduler


def test_set_scheduler_replaces_and_returns(pipe):
    old = pipe.scheduler
    try:
        new = set_scheduler(pipe, "ddim")
        assert pipe.scheduler is new and isinstance(new, DDIMScheduler)
    finally:
        pipe.scheduler = old


def test_names_and_aliases():
    assert scheduler_names() == ["pndm", "ddim", "klms", "euler", "dpm++"]
    assert canonical_name("LMS") == "klms" and canonical_name("DPMSolver++") == "dpm++"


def test_unknown_name_lists_the_names(config):
    with pytest.raises(ValueError, match=r"unknown scheduler 'heun'; choose one of: pndm, ddim, klms, euler, dpm\+\+"):
        make_scheduler("heun", config)


def test_bad_types(config):
    with pytest.raises(TypeError, match="must be a string"):
        make_scheduler(3, config)
    with pytest.raises(TypeError, match="must be a scheduler config"):
        make_scheduler("ddim", 42)


def test_sigmas_match_k_diffusion_schedulers(config):
    for name in ("klms", "euler", "dpm++"):
        s = make_scheduler(name, config)
        t, sig = noise_schedule(s, 10)
        assert len(t) == len(sig) == 10
        np.testing.assert_allclose(sig, s.sigmas[:-1].double().numpy(), rtol=1e-5)


def test_noise_schedule_pndm_repeats_one_timestep(config):
    t, sig = noise_schedule(make_scheduler("pndm", config), 10)
    assert len(t) == 11 and t[1] == t[2]
    assert np.all(np.diff(sig) <= 0)


def test_noise_schedule_bad_steps(config):
    with pytest.raises(ValueError, match="positive integer, got 0"):
        noise_schedule(make_scheduler("ddim", config), 0)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        sigma_of_timestep(make_scheduler("ddim", config), [1000])


def test_unet_call_counter(pipe):
    default = pipe.scheduler
    pipe.scheduler = make_scheduler("pndm", default.config)
    try:
        with UNetCallCounter(pipe.unet) as counter:
            pipe("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="latent")
    finally:
        pipe.scheduler = default
    assert counter.calls == 4  # PNDM visits its second timestep twice: 3 steps, 4 UNet calls
    n_hooks = len(pipe.unet._forward_hooks)
    assert n_hooks == 0  # removed on exit
    with pytest.raises(TypeError, match="needs a torch module"):
        UNetCallCounter("unet")
