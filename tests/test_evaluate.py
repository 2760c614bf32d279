"""The prompt-following checker: validated on the generator's own renders, and run on the shipped weights."""
import numpy as np
import pytest
from PIL import Image

from sdcourse import evaluate as ev
from sdcourse import shapes


@pytest.mark.parametrize("resolution", [64, 128])
def test_checker_reads_every_render(resolution):
    """On the generator's own pictures the checker must be (at least 98%) right on every attribute."""
    scenes = shapes.all_scenes()[:: 1 if resolution == 64 else 5]
    right = {k: 0 for k in shapes.ATTRIBUTES}
    purity = []
    for s in scenes:
        reading = ev.read_picture(shapes.render(s, resolution))
        for k, ok in ev.score(reading, s).items():
            right[k] += ok
        purity.append(reading.purity)
    for k, n in right.items():
        assert n / len(scenes) >= 0.98, f"{k}: {n}/{len(scenes)}"
    assert min(purity) == 1.0


def test_checker_sees_no_shape_in_a_flat_picture():
    reading = ev.read_picture(Image.new("RGB", (64, 64), shapes.PALETTE["blue"]))
    assert reading.background == "blue" and reading.colour is None and reading.shape is None
    assert ev.score(reading, shapes.Scene("circle", "red", "blue"))["colour"] is False


def test_noise_is_impure():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert ev.read_picture(noise).purity < 0.2


def test_bad_pictures():
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        ev.read_picture(np.zeros((64, 64)))
    with pytest.raises(ValueError, match="at least 16x16"):
        ev.read_picture(np.zeros((8, 8, 3)))


def test_heldout_prompts_are_unseen_and_seeded():
    pairs = ev.heldout_prompts(200)
    held = set(shapes.split_scenes()[1])
    assert len(pairs) == 200 and all(s in held for s, _ in pairs)
    assert pairs == ev.heldout_prompts(200)
    with pytest.raises(ValueError, match="positive integer"):
        ev.heldout_prompts(0)


def test_caption_grid_checks_lengths():
    with pytest.raises(ValueError, match="as many captions as pictures"):
        ev.caption_grid([Image.new("RGB", (64, 64))], [])


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler 'plms'"):
        ev.generate(None, ["a red circle"], guidance=1.0, sampler="plms")
