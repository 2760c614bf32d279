"""Guidance by a loss (sdcourse.steer) and DDIM inversion (sdcourse.inversion) on the bundled model."""
import numpy as np
import pytest
import torch
from diffusers import LMSDiscreteScheduler

import sdcourse
from sdcourse import shapes
from sdcourse.inversion import inversion_step, invert, regenerate
from sdcourse.metrics import psnr
from sdcourse.steer import background_loss, steered

BLUE = (0.12, 0.27, 0.9)


def test_a_loss_of_zero_weight_is_the_plain_klms_loop(pipe):
    plain = steered(pipe, "a large red circle", background_loss(BLUE), loss_scale=0, seed=3, steps=12, progress=False)
    klms = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    reference = sdcourse.generate(pipe, "a large red circle", seed=3, steps=12, scheduler=klms, progress=False)
    assert np.array_equal(np.asarray(plain.image), np.asarray(reference.images[0]))
    assert len(plain.losses) == 12


def test_the_push_lowers_the_loss_it_follows(pipe):
    loss = background_loss(BLUE)
    plain = steered(pipe, "a large red circle", loss, loss_scale=0, seed=0, steps=20, progress=False)
    pushed = steered(pipe, "a large red circle", loss, loss_scale=50, seed=0, steps=20, progress=False)
    assert pushed.losses[-1] < 0.5 * plain.losses[-1]
    border = np.asarray(pushed.image, dtype=float)[:4].reshape(-1, 3).mean(axis=0)  # the top rows
    assert border[2] > border[0] and border[2] > border[1]  # blue is the largest channel there


def test_an_inversion_step_is_undone_by_a_ddim_step():
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    a, a_next = torch.tensor(0.9), torch.tensor(0.3)
    up = inversion_step(x, eps, a, a_next)
    x0 = (up - (1 - a_next).sqrt() * eps) / a_next.sqrt()  # DDIM's step down with the same noise guess
    assert torch.allclose(a.sqrt() * x0 + (1 - a).sqrt() * eps, x, atol=1e-5)


def test_inverting_then_regenerating_gives_the_picture_back_and_drifts_at_high_guidance(pipe):
    own = pipe.scheduler.config
    scene = shapes.Scene("square", "red", "white", "top right", "large")
    picture, caption = shapes.render(scene), scene.caption()
    noise = invert(pipe, picture, caption, steps=25, progress=False)
    assert noise.shape == (1, 4, 8, 8)
    back = regenerate(pipe, noise, caption, steps=25, progress=False)
    assert psnr(picture, back) > 22
    drifted = regenerate(pipe, invert(pipe, picture, caption, steps=25, guidance=7.5, progress=False), caption,
                         steps=25, guidance=7.5, progress=False)
    assert psnr(picture, drifted) < psnr(picture, back) - 3
    assert pipe.scheduler.config == own  # DDIM ran on a scheduler of its own


def test_bad_steps_are_one_sentence(pipe):
    with pytest.raises(ValueError, match="steps"):
        invert(pipe, shapes.render(shapes.Scene("circle", "red", "white")), "a red circle", steps=0)
