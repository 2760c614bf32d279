"""sdcourse.metrics: PSNR and mean absolute difference."""
import math

import numpy as np
import pytest
from PIL import Image

from sdcourse.metrics import mean_abs_diff, psnr


def test_psnr_values():
    a = Image.new("RGB", (8, 8), (100, 100, 100))
    b = Image.new("RGB", (8, 8), (110, 100, 100))
    assert psnr(a, a) == math.inf
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))
    assert mean_abs_diff(a, b) == pytest.approx(10 / 3 / 255)


def test_psnr_region():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255
    region = np.ones((4, 4), bool)
    region[0, 0] = False
    assert psnr(a, b, region) == math.inf
    assert psnr(a, b, ~region) == 0.0


def test_psnr_bad_inputs():
    a = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match=r"same shape .*a is \(8, 8, 3\), b is \(4, 4, 3\)"):
        psnr(a, Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="region is 4x4 pixels but the pictures are 8x8"):
        psnr(a, a, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="region is empty"):
        psnr(a, a, np.zeros((8, 8), bool))
    with pytest.raises(TypeError, match="PIL picture"):
        psnr("a.png", a)
