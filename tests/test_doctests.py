"""The ``>>>`` examples in the course helper modules run and print what they show.

Examples that need a loaded pipeline (``pipe``) are marked ``# doctest: +SKIP`` in the source;
the notebooks run those for real. Everything else runs here.
"""
import doctest
import importlib

import numpy as np
import pytest
import torch
from PIL import Image

import sdcourse

MODULES = ["validate", "interp", "metrics", "course_data", "animation", "seeds", "images", "loop", "img2img",
           "inpaint", "schedulers", "video", "fast_loop", "speed", "colab", "loader"]
MODULES += ["shapes", "mini.evaluate"]  # the mini model's world and its checker


@pytest.mark.parametrize("name", MODULES)
def test_examples_in_docstrings(name):
    module = importlib.import_module(f"sdcourse.{name}")
    result = doctest.testmod(module, extraglobs={"sdcourse": sdcourse, "torch": torch, "np": np, "Image": Image},
                             optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in sdcourse.{name} failed"
