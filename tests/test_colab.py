"""The Colab setup: each notebook's first code cell installs the course only inside Colab."""
import importlib.machinery
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sdcourse import colab

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def first_code_cell(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cell"
    source = code[0]["source"]
    return "".join(source) if isinstance(source, list) else source


def fake_colab(monkeypatch):
    """Make `import google.colab` succeed, as it does inside Colab."""
    google = types.ModuleType("google")
    google.__path__ = []
    google.__spec__ = importlib.machinery.ModuleSpec("google", None, is_package=True)
    module = types.ModuleType("google.colab")
    module.__spec__ = importlib.machinery.ModuleSpec("google.colab", None)
    google.colab = module
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", module)


def no_colab(monkeypatch):
    """Make `import google.colab` fail, as it does everywhere but Colab."""
    monkeypatch.setitem(sys.modules, "google.colab", None)


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def record(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", record)
    return calls


def run_cell(source: str):
    exec(compile(source, "<first cell>", "exec"), {"__name__": "__main__"})


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_installs_the_repo_in_colab(path, monkeypatch, recorded, capsys):
    source = first_code_cell(path)
    assert "sdcourse" not in source.replace(colab.PIP_REQUIREMENT, ""), "the first cell must not import sdcourse"
    fake_colab(monkeypatch)
    run_cell(source)
    assert recorded == colab.install_commands()
    assert recorded[0][1:5] == ["-m", "pip", "install", "--quiet"]
    assert recorded[0][-1] == "sdcourse @ git+https://github.com/sdcourse/sdcourse"
    assert "Colab setup: pip install" in capsys.readouterr().out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_does_nothing_locally(path, monkeypatch, recorded, capsys):
    no_colab(monkeypatch)
    run_cell(first_code_cell(path))
    assert recorded == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_is_the_shared_setup_cell(path):
    assert first_code_cell(path) == colab.setup_cell_source()


def test_setup_cell_source_runs_install_commands(monkeypatch, recorded):
    fake_colab(monkeypatch)
    run_cell(colab.setup_cell_source())
    assert recorded == colab.install_commands()


def test_setup_colab_in_colab(monkeypatch):
    fake_colab(monkeypatch)
    ran = []
    assert colab.in_colab()
    commands = colab.setup_colab(run=lambda cmd, check: ran.append(cmd))
    assert commands == ran == colab.install_commands()


def test_setup_colab_locally_runs_nothing(monkeypatch, capsys):
    no_colab(monkeypatch)
    ran = []
    assert not colab.in_colab()
    assert colab.setup_colab(run=lambda cmd, check: ran.append(cmd)) == []
    assert ran == []
    assert capsys.readouterr().out == ""


def test_install_commands_use_the_given_python():
    assert colab.install_commands("py")[0][:3] == ["py", "-m", "pip"]
    assert colab.REPO_URL == "https://github.com/sdcourse/sdcourse"
