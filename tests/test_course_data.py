"""sdcourse.course_data and scripts/make_data.py: the course's own pictures and masks."""

import numpy as np
import pytest

import conftest
from sdcourse.course_data import PICTURES, SAVED_SIZES, data_file, draw_picture, load_picture



def load_script():
    return conftest.load_script("scripts/make_data.py")


def test_saved_files_match_the_drawings(capsys):
    assert load_script().main(["--check"]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("name", list(PICTURES))
def test_sizes_and_modes(name):
    for size in SAVED_SIZES:
        assert data_file(name, size).is_file()
        pic = load_picture(name, size)
        assert pic.size == (size, size)
        assert pic.mode == ("L" if name.startswith("mask") else "RGB")


@pytest.mark.parametrize("name", [n for n in PICTURES if n.startswith("mask")])
def test_masks_binary_and_on_the_8x8_grid(name):
    for size in (64, 128, 512):
        m = np.asarray(draw_picture(name, size))
        assert set(np.unique(m)) == {0, 255}
        cell = size // 8
        blocks = m.reshape(8, cell, 8, cell)
        assert np.all(blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3)))  # each grid cell is all one value


def test_drawn_when_not_saved():
    assert load_picture("sketch", 128).size == (128, 128)  # no 128 px file: drawn


def test_bad_names_and_sizes():
    with pytest.raises(ValueError, match="unknown course picture 'cat'; choose one of: scene"):
        draw_picture("cat", 64)
    with pytest.raises(ValueError, match="multiple of 64 pixels"):
        draw_picture("scene", 100)
