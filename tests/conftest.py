"""Fixtures shared by the test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def pipe():
    """The bundled mini model on the CPU in float32, loaded once per test module (modules swap its scheduler)."""
    import sdcourse

    pipe = sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe
