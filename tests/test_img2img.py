"""sdcourse.img2img: strength checks, the start step, and the hand-built loop against the pipeline."""
import numpy as np
import pytest
import torch

import sdcourse
from sdcourse.course_data import load_picture
from sdcourse.img2img import check_strength, img2img, img2img_pipeline, noised_start, start_step
from sdcourse.metrics import psnr
from sdcourse.schedulers import set_scheduler

PROMPT = "a large yellow square in the center on a black background"


@pytest.fixture(scope="module")
def picture():
    return load_picture("scene", 64)


def test_check_strength():
    assert check_strength(0) == 0.0 and check_strength(1) == 1.0 and check_strength(0.25) == 0.25


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
def test_strength_out_of_range(bad):
    with pytest.raises(ValueError, match=r"strength must be from 0 to 1 \(0 keeps the picture"):
        check_strength(bad)


@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_strength_wrong_type(bad):
    with pytest.raises(TypeError, match="strength must be a number"):
        check_strength(bad)


def test_start_step_rule():
    assert [start_step(10, s) for s in (0.0, 0.05, 0.1, 0.5, 0.99, 1.0)] == [10, 10, 9, 5, 1, 0]
    with pytest.raises(ValueError, match="strength"):
        start_step(10, 2)


def test_pipeline_shares_modules(pipe):
    i2i = img2img_pipeline(pipe)
    assert i2i.unet is pipe.unet and i2i.vae is pipe.vae and i2i.text_encoder is pipe.text_encoder
    with pytest.raises(TypeError, match="needs a diffusers pipeline"):
        img2img_pipeline("pipe")


@pytest.mark.parametrize("name", ["pndm", "ddim", "euler", "dpm++"])
@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
def test_hand_built_equals_pipeline(pipe, picture, name, strength):
    old = pipe.scheduler
    try:
        set_scheduler(pipe, name)
        ours = img2img(pipe, picture, PROMPT, strength=strength, steps=8, seed=5)
        i2i = img2img_pipeline(pipe)
        theirs = i2i(PROMPT, image=picture, strength=strength, num_inference_steps=8,
                     generator=torch.Generator().manual_seed(5), output_type="latent").images
    finally:
        pipe.scheduler = old
    assert torch.equal(ours.latents, theirs)


def test_strength_zero_is_vae_round_trip(pipe, picture):
    out = img2img(pipe, picture, PROMPT, strength=0.0, steps=8, seed=1)
    clean = sdcourse.pil_to_latents(pipe.vae, [picture], generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.latents, clean)
    assert psnr(out.images[0], sdcourse.latents_to_pil(pipe.vae, clean)[0]) == float("inf")


def test_start_latents(pipe, picture):
    lat, begin, clean = noised_start(pipe, picture, 0.5, 10, torch.Generator().manual_seed(0))
    assert begin == 5 and lat.shape == clean.shape == (1, 4, 8, 8)
    assert not torch.equal(lat, clean)


def test_bad_picture(pipe, picture):
    with pytest.raises(ValueError, match="multiples of 8"):
        img2img(pipe, picture.resize((60, 64)), PROMPT)
    with pytest.raises(TypeError, match="image must be a PIL picture"):
        img2img(pipe, np.zeros((64, 64, 3)), PROMPT)
    with pytest.raises(ValueError, match=r"strength must be from 0 to 1 \(0 keeps the picture"):
        img2img(pipe, picture, PROMPT, strength=1.5)
    with pytest.raises(ValueError, match="one prompt"):
        img2img(pipe, picture, [PROMPT, PROMPT])
