"""make_generator: same seed, same noise; bad seeds and devices are refused."""
import pytest
import torch

from sdcourse import make_generator


def test_same_seed_same_noise():
    a = torch.randn(4, 8, 8, generator=make_generator(42))
    b = torch.randn(4, 8, 8, generator=make_generator(42))
    c = torch.randn(4, 8, 8, generator=make_generator(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_matches_torch_manual_seed():
    expected = torch.randn(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.randn(3, generator=make_generator(7, "cpu")), expected)
    assert make_generator(7, torch.device("cpu")).device.type == "cpu"


@pytest.mark.parametrize("seed, error, match", [
    (-5, ValueError, "got -5"),
    (2.5, TypeError, "got 2.5 of type float"),
])
def test_bad_seed(seed, error, match):
    with pytest.raises(error, match=match):
        make_generator(seed)


def test_bad_device():
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        make_generator(0, "tpu")
    with pytest.raises(TypeError, match="device must be a string"):
        make_generator(0, 0.5)
