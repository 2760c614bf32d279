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


class CellMargin:
    """A notebook cell (nbval) that needs more than half of the cell timeout fails, naming its time: on a machine
    half as fast as this one it would time out. Shorten its work, or raise the timeout where a long cell is the
    lesson (chapter 13's training). Registered for every collected item, notebooks/ included."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.when != "call" or type(item).__name__ != "IPyNbCell" or not report.passed:
            return
        timeout = float(item.config.getoption("nbval_cell_timeout", 0) or 0)
        if timeout and call.duration > timeout / 2:
            report.outcome = "failed"
            report.longrepr = (f"this cell took {call.duration:.0f} s, more than half of the cell timeout "
                               f"({timeout:.0f} s): on a machine half as fast it would time out")


def pytest_configure(config):
    config.pluginmanager.register(CellMargin(), "sdcourse-cell-margin")
