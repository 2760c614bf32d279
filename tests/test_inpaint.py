"""sdcourse.inpaint: mask checks, the latent mask, and the hand-built blend against the pipeline."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import sdcourse
from sdcourse.course_data import load_picture
from sdcourse.inpaint import inpaint, inpaint_pipeline, latent_mask, mask_to_pil, prepare_mask
from sdcourse.schedulers import set_scheduler

PROMPT = "a large yellow square in the center on a blue background"


@pytest.fixture(scope="module")
def picture():
    return load_picture("scene", 64)


@pytest.fixture(scope="module")
def mask():
    return load_picture("mask_center", 64)


def test_prepare_mask_white_is_one(picture, mask):
    m = prepare_mask(mask, picture)
    assert m.shape == (1, 1, 64, 64) and m.dtype == torch.float32
    assert m[0, 0, 32, 32] == 1 and m[0, 0, 0, 0] == 0
    assert int(m.sum()) == 32 * 32
    assert np.array_equal(np.asarray(mask_to_pil(m)), np.asarray(mask))


def test_other_mask_types(picture, mask):
    arr = np.asarray(mask) > 0
    for m in (arr, arr.astype(np.uint8) * 255, arr.astype(np.float32), torch.from_numpy(arr.astype(np.float32))[None]):
        assert torch.equal(prepare_mask(m, picture), prepare_mask(mask, picture))
    assert torch.equal(prepare_mask(mask.convert("RGB"), picture), prepare_mask(mask, picture))


def test_grey_mask_thresholded_at_half(picture):
    grey = np.zeros((64, 64), np.uint8)
    grey[:, :16] = 127   # just below 0.5: kept
    grey[:, 16:32] = 128  # just above: repainted
    m = prepare_mask(Image.fromarray(grey), picture)
    assert m[0, 0, :, :16].sum() == 0 and m[0, 0, :, 16:32].min() == 1
    with pytest.raises(ValueError, match="not binary: 2048 pixels are neither black nor white"):
        prepare_mask(Image.fromarray(grey), picture, strict=True)


def test_blurred_mask(picture, mask):
    soft = mask.filter(ImageFilter.GaussianBlur(3))
    # Across the middle of an edge a symmetric blur crosses 0.5 exactly at the edge: the threshold
    # gives the sharp mask back there (only the corners get rounded).
    assert torch.equal(prepare_mask(soft, picture)[0, 0, 32], prepare_mask(mask, picture)[0, 0, 32])
    assert torch.equal(prepare_mask(soft, picture)[0, 0, :, 32], prepare_mask(mask, picture)[0, 0, :, 32])


def test_mask_size_must_match(picture, mask):
    with pytest.raises(ValueError, match="same size: the mask is 32x32, the picture 64x64"):
        prepare_mask(mask.resize((32, 32)), picture)


def test_bad_masks(picture):
    with pytest.raises(ValueError, match="all black"):
        prepare_mask(Image.new("L", (64, 64)), picture)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        prepare_mask(np.full((64, 64), 2.0), picture)
    with pytest.raises(ValueError, match="one H x W channel"):
        prepare_mask(np.zeros((64, 64, 3)), picture)
    with pytest.raises(TypeError, match="mask must be a PIL picture"):
        prepare_mask([[0, 1]], picture)


def test_latent_mask_any_pixel(picture):
    m = torch.zeros(1, 1, 64, 64)
    m[0, 0, 9, 9] = 1  # one pixel in latent cell (1, 1)
    lm = latent_mask(m, 8)
    assert lm.shape == (1, 1, 8, 8) and lm.sum() == 1 and lm[0, 0, 1, 1] == 1
    with pytest.raises(ValueError, match="multiples of 8"):
        latent_mask(torch.ones(1, 1, 60, 64), 8)
    with pytest.raises(ValueError, match=r"\(1, 1, H, W\)"):
        latent_mask(torch.ones(64, 64), 8)


def test_pipeline_shares_modules(pipe):
    inp = inpaint_pipeline(pipe)
    assert inp.unet is pipe.unet and inp.vae is pipe.vae
    assert pipe.unet.config.in_channels == 4  # a text-to-image UNet: the pipeline blends latents


@pytest.mark.parametrize("name", ["pndm", "ddim", "euler", "dpm++"])
def test_hand_built_equals_pipeline(pipe, picture, mask, name):
    old = pipe.scheduler
    try:
        set_scheduler(pipe, name)
        ours = inpaint(pipe, picture, mask, PROMPT, steps=6, seed=2)
        theirs = inpaint_pipeline(pipe)(PROMPT, image=picture, mask_image=mask, num_inference_steps=6,
                                        generator=torch.Generator().manual_seed(2), output_type="latent").images
    finally:
        pipe.scheduler = old
    assert torch.equal(ours.latents, theirs)


def test_outside_latents_are_the_pictures(pipe, picture, mask):
    out = inpaint(pipe, picture, mask, PROMPT, steps=6, seed=3)
    clean = sdcourse.pil_to_latents(pipe.vae, [picture], generator=torch.Generator().manual_seed(3))
    keep = latent_mask(prepare_mask(mask, picture), 8) == 0
    keep = keep.expand_as(clean)
    assert torch.equal(out.latents[keep], clean[keep])
    assert not torch.equal(out.latents[~keep], clean[~keep])


def test_bad_inputs(pipe, picture, mask):
    with pytest.raises(ValueError, match="same size"):
        inpaint(pipe, picture, mask.resize((32, 32)), PROMPT)
    with pytest.raises(ValueError, match="multiples of 8"):
        inpaint(pipe, picture.resize((60, 60)), mask.resize((60, 60)), PROMPT)
    with pytest.raises(ValueError, match="not binary"):
        inpaint(pipe, picture, mask.filter(ImageFilter.GaussianBlur(2)), PROMPT, strict=True)
