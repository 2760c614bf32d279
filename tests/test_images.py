"""Grids, display, and the VAE's pixels <-> latents trip, checked against diffusers' own processing."""
import numpy as np
import pytest
import torch
from PIL import Image

import sdcourse
from sdcourse import images as im
from sdcourse.loader import MINI_MODEL_DIR

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def squares(n=4, size=(16, 12)):
    return [Image.new("RGB", size, COLOURS[i % 4]) for i in range(n)]


@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(MINI_MODEL_DIR, subfolder="vae", dtype=torch.float32).eval()


# ---------------------------------------------------------------- image_grid

def test_grid_places_pictures_row_by_row():
    grid = sdcourse.image_grid(squares(4), rows=2, cols=2)
    assert grid.size == (32, 24)
    assert grid.getpixel((0, 0)) == COLOURS[0]
    assert grid.getpixel((16, 0)) == COLOURS[1]
    assert grid.getpixel((0, 12)) == COLOURS[2]
    assert grid.getpixel((31, 23)) == COLOURS[3]


def test_grid_one_row():
    assert sdcourse.image_grid(squares(3), rows=1, cols=3).size == (48, 12)


def test_grid_count_mismatch():
    with pytest.raises(ValueError, match=r"2 x 3 = 6, but there are 4 pictures"):
        sdcourse.image_grid(squares(4), rows=2, cols=3)


def test_grid_mixed_sizes():
    pictures = squares(2) + [Image.new("RGB", (8, 8))]
    with pytest.raises(ValueError, match=r"same size; got sizes \(width, height\) \[\(8, 8\), \(16, 12\)\]"):
        sdcourse.image_grid(pictures, rows=1, cols=3)


def test_grid_empty():
    with pytest.raises(ValueError, match="empty list of pictures"):
        sdcourse.image_grid([], rows=1, cols=1)


def test_grid_bad_rows():
    with pytest.raises(ValueError, match="rows must be a positive integer; got 0"):
        sdcourse.image_grid(squares(1), rows=0, cols=1)


def test_grid_tensor_instead_of_picture():
    with pytest.raises(TypeError, match=r"images\[1\] is a Tensor, not a PIL image \(use latents_to_pil"):
        sdcourse.image_grid([squares(1)[0], torch.zeros(3, 8, 8)], rows=1, cols=2)


# ---------------------------------------------------------------- upscale and show

def test_upscale_small_pictures_by_whole_factor_nearest():
    small = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3))
    big = sdcourse.upscale(small)
    assert big.size == (256, 256)
    assert np.array_equal(np.asarray(big)[::4, ::4], np.asarray(small))  # crisp: every pixel a 4x4 block


def test_upscale_leaves_large_pictures_alone():
    picture = Image.new("RGB", (300, 256))
    assert sdcourse.upscale(picture) is picture


def test_show_displays_an_enlarged_grid(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    sdcourse.show(squares(3, size=(64, 64)), rows=2)
    sdcourse.show(squares(1, size=(512, 512))[0])
    assert [p.size for p in shown] == [(512, 512), (512, 512)]  # 2x2 cells of 64 px, x4; 512 px as is
    assert shown[0].getpixel((511, 511)) == (0, 0, 0)  # the missing fourth cell is blank


def test_labelled_grid_has_margins_with_text_and_the_pictures_unchanged():
    pictures = squares(4, size=(64, 64))
    plain = sdcourse.image_grid(pictures, rows=2, cols=2)
    labelled = sdcourse.image_grid(pictures, rows=2, cols=2, row_labels=["guidance 1", "guidance 7.5"],
                                   col_labels=["seed 0", "seed 1"])
    left, top = labelled.width - plain.width, labelled.height - plain.height
    assert left > 20 and top > 8  # room for the row labels on the left and the column labels on top
    assert labelled.crop((left, top, labelled.width, labelled.height)).tobytes() == plain.tobytes()
    margin = np.asarray(labelled)[:top, left:]  # the column labels: dark text on white
    assert (margin.min(axis=-1) < 100).any() and (margin == 255).mean() > 0.5
    rows_only = sdcourse.image_grid(pictures, rows=2, cols=2, row_labels=["a", "b"])
    assert rows_only.height == plain.height and rows_only.width > plain.width


def test_show_labels_the_enlarged_grid(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    sdcourse.show(squares(3, size=(64, 64)), col_labels=["5 steps", "10 steps", "20 steps"])
    grid = shown[0]
    assert grid.width == 3 * 256 and grid.height > 256  # cells enlarged to 256 px, a label row on top
    assert grid.getpixel((128, grid.height - 128)) == COLOURS[0]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(col_labels=["a", "b"]), ValueError, "col_labels has 2 texts for 3 cols"),
    (dict(row_labels=["a", "b"]), ValueError, "row_labels has 2 texts for 1 rows"),
    (dict(col_labels="abc"), TypeError, "col_labels must be a list of 3 texts"),
    (dict(row_labels=5), TypeError, "row_labels must be a list of 1 texts"),
])
def test_bad_labels_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        sdcourse.image_grid(squares(3), rows=1, cols=3, **kwargs)
    with pytest.raises(error, match=match):
        im.show_grid(squares(3), **kwargs)


def test_show_nothing():
    with pytest.raises(ValueError, match="empty list of pictures"):
        sdcourse.show([])


# ---------------------------------------------------------------- pixels <-> tensors, same as diffusers

def test_pixels_round_trip_exactly():
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    pixels = sdcourse.pil_to_tensor([picture])
    assert pixels.shape == (1, 3, 24, 40) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert np.array_equal(np.asarray(sdcourse.tensor_to_pil(pixels)[0]), np.asarray(picture))


def test_same_processing_as_diffusers():
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=8)
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert torch.allclose(sdcourse.pil_to_tensor(picture), processor.preprocess(picture), atol=1e-6)
    pixels = torch.randn(2, 3, 16, 16) * 0.7  # some values outside [-1, 1] too
    ours = sdcourse.tensor_to_pil(pixels)
    theirs = processor.postprocess(pixels, output_type="pil")
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs))


def test_tensor_to_pil_bad_shape():
    with pytest.raises(ValueError, match=r"expected a \(B, 3, H, W\) tensor.*got \(3, 8, 8\)"):
        sdcourse.tensor_to_pil(torch.zeros(3, 8, 8))


# ---------------------------------------------------------------- through the VAE

def test_latents_shapes_and_scaling(vae):
    pictures = squares(2, size=(64, 64))
    latents = sdcourse.pil_to_latents(vae, pictures)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    assert latents.shape == (2, vae.config.latent_channels, 64 // f, 64 // f)
    with torch.no_grad():
        expected = vae.encode(sdcourse.pil_to_tensor(pictures)).latent_dist.mean * vae.config.scaling_factor
    assert torch.allclose(latents, expected)
    assert torch.equal(latents, sdcourse.pil_to_latents(vae, pictures))  # the mean: deterministic


def test_latents_sampled_with_a_generator(vae):
    pictures = squares(1, size=(64, 64))
    a = sdcourse.pil_to_latents(vae, pictures, generator=sdcourse.make_generator(0))
    b = sdcourse.pil_to_latents(vae, pictures, generator=sdcourse.make_generator(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, sdcourse.pil_to_latents(vae, pictures))


def test_latents_to_pil_undoes_the_scaling(vae):
    latents = torch.randn(2, vae.config.latent_channels, 8, 8, generator=sdcourse.make_generator(0))
    pictures = sdcourse.latents_to_pil(vae, latents)
    assert len(pictures) == 2 and pictures[0].size == (64, 64)
    with torch.no_grad():
        pixels = vae.decode(latents / vae.config.scaling_factor).sample
    assert np.array_equal(np.asarray(pictures[1]), np.asarray(sdcourse.tensor_to_pil(pixels)[1]))


def test_latents_without_batch_dimension(vae):
    with pytest.raises(ValueError, match=r"expected latents of shape \(B, 4, h, w\); got \(4, 8, 8\) "
                                         r"\(add the batch dimension"):
        sdcourse.latents_to_pil(vae, torch.zeros(4, 8, 8))


def test_latents_with_wrong_channels(vae):
    with pytest.raises(ValueError, match=r"got \(1, 3, 8, 8\)"):
        sdcourse.latents_to_pil(vae, torch.zeros(1, 3, 8, 8))


def test_picture_size_not_a_multiple_of_the_vae_factor(vae):
    with pytest.raises(ValueError, match="picture size 60 x 60 must be a multiple of 8"):
        sdcourse.pil_to_latents(vae, Image.new("RGB", (60, 60)))
