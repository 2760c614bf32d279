"""The door checks: good values pass through, bad ones get a sentence naming them."""
import numpy as np
import pytest

from sdcourse.validate import check_prompts, check_seed, check_size


def test_sizes_that_pass():
    assert check_size(64, 64) == (64, 64)
    assert check_size(512, 768) == (512, 768)
    assert check_size(np.int64(64), 8) == (64, 8)
    assert check_size(60, 60, multiple=4) == (60, 60)


@pytest.mark.parametrize("height, width, match", [
    (100, 64, "height must be a positive multiple of 8.*got 100"),
    (64, 0, "width must be a positive multiple of 8.*got 0"),
    (-64, 64, "height must be a positive multiple of 8.*got -64"),
])
def test_sizes_out_of_range(height, width, match):
    with pytest.raises(ValueError, match=match):
        check_size(height, width)


@pytest.mark.parametrize("height, width, match", [
    (64.0, 64, "height must be an integer.*got 64.0 of type float"),
    (64, "64", "width must be an integer.*got '64' of type str"),
    (True, 64, "height must be an integer.*got True of type bool"),
])
def test_sizes_of_wrong_type(height, width, match):
    with pytest.raises(TypeError, match=match):
        check_size(height, width)


def test_seeds_that_pass():
    assert check_seed(0) == 0
    assert check_seed(2**64 - 1) == 2**64 - 1
    assert check_seed(np.int32(7)) == 7 and type(check_seed(np.int32(7))) is int


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seed_out_of_range(seed):
    with pytest.raises(ValueError, match=f"seed must be between 0 and 2\\*\\*64 - 1; got {seed}"):
        check_seed(seed)


@pytest.mark.parametrize("seed, shown", [(1.5, "1.5"), ("42", "'42'"), (None, "None"), (False, "False")])
def test_seed_not_an_integer(seed, shown):
    with pytest.raises(TypeError, match=f"seed must be a whole number.*got {shown} of type"):
        check_seed(seed)


def test_prompts_that_pass():
    assert check_prompts("a red circle") == ["a red circle"]
    assert check_prompts(("a", "b")) == ["a", "b"]
    assert check_prompts([""]) == [""]  # the unconditional prompt is a real prompt


def test_empty_prompt_list():
    with pytest.raises(ValueError, match="prompts is an empty list; give at least one prompt"):
        check_prompts([])


def test_prompt_that_is_not_a_string():
    with pytest.raises(TypeError, match=r"prompts\[1\] is 3 of type int"):
        check_prompts(["a red circle", 3])


def test_prompts_of_wrong_type():
    with pytest.raises(TypeError, match="prompts must be a string or a list of strings; got None"):
        check_prompts(None)
