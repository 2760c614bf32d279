"""scripts/klms_order_bands.py: K-LMS with Euler's method swapped in over a band of noise levels."""
import conftest
import pytest
import torch
from diffusers import EulerDiscreteScheduler, LMSDiscreteScheduler

from sdcourse import MINI_MODEL_DIR

bands = conftest.load_script("scripts/klms_order_bands.py")


def run(scheduler, steps=12):
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g) * scheduler.init_noise_sigma
    trace = []
    for t in scheduler.timesteps:
        eps = torch.tanh(x) + 0.1 * torch.randn(x.shape, generator=g)  # any smooth-ish "model"
        x = scheduler.step(eps, t, x).prev_sample
        trace.append(x)
    return trace


@pytest.fixture(scope="module")
def config():
    return LMSDiscreteScheduler.from_pretrained(MINI_MODEL_DIR, subfolder="scheduler").config


def test_no_band_is_k_lms_and_every_band_is_eulers_method(config):
    plain, none = run(LMSDiscreteScheduler.from_config(config)), run(bands.band_scheduler(config, 0.0, 0.0))
    assert all(torch.equal(a, b) for a, b in zip(plain, none))
    euler, everywhere = run(EulerDiscreteScheduler.from_config(config)), run(bands.band_scheduler(config, 0, 1e9))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(euler, everywhere))
    assert not torch.allclose(plain[-1], euler[-1], atol=1e-3)  # the orders do differ on this path


def test_a_low_band_changes_only_the_last_steps(config):
    plain, low = run(LMSDiscreteScheduler.from_config(config)), run(bands.band_scheduler(config, 0.0, 0.5))
    sigmas = LMSDiscreteScheduler.from_config(config)
    sigmas.set_timesteps(12)
    first_low = int((sigmas.sigmas[:-1] < 0.5).nonzero()[0])
    assert all(torch.equal(a, b) for a, b in zip(plain[:first_low], low[:first_low]))
    assert not torch.allclose(plain[-1], low[-1], atol=1e-4)


def test_bands_come_in_pairs():
    with pytest.raises(SystemExit):
        bands.main(["--bands", "0", "1", "2"])
