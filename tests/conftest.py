"""Fixtures and helpers shared by the test modules."""
import importlib.util
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def pipe():
    """The bundled mini model on the CPU in float32, loaded once per test module (modules swap its scheduler)."""
    import sdcourse

    pipe = sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """A script of the repository (``"scripts/make_data.py"``), imported as a module without running its main."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class fast:
    """Asserts the block took under ``limit`` seconds (a generous bound on answering bad input)."""

    def __init__(self, limit=2.0):
        self.limit = limit

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self.start
        assert elapsed < self.limit, f"took {elapsed:.2f} s"
