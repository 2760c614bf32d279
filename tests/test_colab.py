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
    """subprocess.run replaced by a recorder; each call also keeps the constraints file pip was given."""
    calls = []

    def record(cmd, *args, **kwargs):
        cmd = list(cmd)
        pins = Path(cmd[cmd.index("-c") + 1]).read_text().split() if "-c" in cmd else None
        calls.append({"cmd": cmd, "pins": pins})
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", record)
    return calls


def run_cell(source: str) -> dict:
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<first cell>", "exec"), namespace)
    return namespace


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_is_the_shared_setup_cell(path):
    assert first_code_cell(path) == colab.setup_cell_source()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_does_nothing_locally(path, monkeypatch, recorded, capsys):
    no_colab(monkeypatch)
    run_cell(first_code_cell(path))
    assert recorded == []
    assert capsys.readouterr().out == ""


def test_in_colab_the_cell_installs_the_course_holding_colabs_packages(monkeypatch, recorded, capsys):
    import importlib.metadata

    fake_colab(monkeypatch)
    source = colab.setup_cell_source()
    assert "sdcourse" not in import_roots(source), "the first cell must not import sdcourse"
    run_cell(source)
    [call] = recorded
    cmd, pins = call["cmd"], call["pins"]
    assert cmd[:5] == [sys.executable, "-m", "pip", "install", "--quiet"] and cmd[-1] == colab.PIP_REQUIREMENT
    # the held packages, at the versions this environment has
    for name in colab.ALWAYS_HELD:
        assert f"{name}=={importlib.metadata.version(name)}" in pins, name
    # so is everything this process has imported (numpy, and diffusers here), but never the course itself
    assert f"numpy=={importlib.metadata.version('numpy')}" in pins
    assert not any(line.startswith("sdcourse==") for line in pins)
    out = capsys.readouterr().out
    assert "Colab setup: installing the course" in out and "Colab setup: installed nothing new" in out


def test_the_cell_reports_what_pip_changed_and_stops_clearly_when_pip_fails(monkeypatch, capsys):
    import importlib.metadata

    fake_colab(monkeypatch)
    real = importlib.metadata.distributions
    calls = []

    def pip(cmd, *args, **kwargs):  # "installs" by making the next listing show a newer numpy
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    def listing():
        for dist in real():
            if calls and dist.metadata["Name"] == "numpy":
                dist = types.SimpleNamespace(metadata={"Name": "numpy"}, version="99.0", requires=None)
            yield dist

    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setattr(importlib.metadata, "distributions", listing)
    run_cell(colab.setup_cell_source())
    assert f"installed numpy 99.0 (was {importlib.metadata.version('numpy')})" in capsys.readouterr().out

    monkeypatch.setattr(importlib.metadata, "distributions", real)
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(SystemExit, match="without changing Colab's own packages"):
        run_cell(colab.setup_cell_source())


def test_held_keeps_colabs_pins_imports_and_the_always_held(monkeypatch, recorded):
    fake_colab(monkeypatch)
    held = run_cell(colab.setup_cell_source())["held"]
    versions = {"ipython": "7.34.0", "torch": "2.11.0", "pandas": "2.2.3", "numpy": "2.1.3", "sdcourse": "0.1",
                "ipywidgets": "7.7.1", "diffusers": "0.39.0", "typing-extensions": "4.16.0"}
    pins = held(versions, ["pandas==2.2.2", "requests>=2", "Typing_Extensions==4; python_version>'3'"],
                ["numpy", "sdcourse"])
    # versions come from what is installed, not from google-colab's pins; names are normalised
    assert pins == ["ipython==7.34.0", "ipywidgets==7.7.1", "numpy==2.1.3", "pandas==2.2.3", "torch==2.11.0",
                    "typing-extensions==4.16.0"]


def test_setup_colab_in_colab_runs_the_cell(monkeypatch, recorded):
    fake_colab(monkeypatch)
    assert colab.in_colab()
    assert colab.setup_colab(run=subprocess.run) is True
    assert [c["cmd"][-1] for c in recorded] == [colab.PIP_REQUIREMENT]


def test_setup_colab_locally_runs_nothing(monkeypatch, recorded, capsys):
    no_colab(monkeypatch)
    assert not colab.in_colab()
    assert colab.setup_colab() is False
    assert recorded == []
    assert capsys.readouterr().out == ""


def test_the_cell_can_point_at_another_requirement():
    source = colab.setup_cell_source("sdcourse[colab] @ file:///tmp/checkout")
    assert "file:///tmp/checkout" in source and colab.REPO_URL not in source
    assert colab.REPO_URL == "https://github.com/sdcourse/sdcourse"


# --- what Colab's install provides against what the chapters import ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
COLAB_OWN = {"google"}  # Colab's own module (the setup cell imports it inside a try)


def import_roots(source: str) -> set[str]:
    """The top-level modules that Python source imports (absolute imports only)."""
    import ast

    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def sdcourse_imports(source: str, package: str = "") -> list[str]:
    """The sdcourse modules (and names that may be modules) that ``source`` imports; relative imports are
    resolved against ``package``."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                module = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "sdcourse":
                found += [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "sdcourse"]
    return found


def chapter_sources() -> dict[str, str]:
    """Every chapter's code cells, and every module of the sdcourse package that the chapters import,
    following sdcourse's own imports (relative ones included) until no new module turns up."""
    sources, todo = {}, ["sdcourse"]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        # IPython magics and shell lines are not Python
        sources[path.name] = "\n".join(line for cell in code for line in cell.splitlines()
                                       if not line.lstrip().startswith(("%", "!")))
        todo += sdcourse_imports(sources[path.name])
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        base = ROOT.joinpath(*name.split("."))
        file = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if not file.is_file():
            continue  # a function or class imported from a module, not a module
        sources[name] = file.read_text()
        todo += sdcourse_imports(sources[name], name if base.is_dir() else name.rpartition(".")[0])
    return sources


def colab_install_closure() -> set[str]:
    """The distributions that `pip install sdcourse[colab]` brings: the dependencies and the colab extra,
    and everything those require in turn (as the installed packages' metadata says)."""
    import importlib.metadata

    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["colab"]]
    found = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return found


def test_the_colab_install_covers_every_import_of_the_chapters():
    """Every module a chapter imports, directly or through the sdcourse modules it uses, comes with
    `pip install sdcourse[colab]` (or with Python itself)."""
    import importlib.metadata

    from packaging.utils import canonicalize_name

    owners = importlib.metadata.packages_distributions()
    provided = colab_install_closure()
    sources = chapter_sources()
    missing = {}
    for where, source in sources.items():
        if where.startswith("sdcourse.grading") or where.startswith("sdcourse.mini.train"):
            continue  # the teacher's grading command and the model's training run outside the chapters
        for root in import_roots(source) - set(sys.stdlib_module_names) - COLAB_OWN - {"sdcourse"}:
            dists = {canonicalize_name(d) for d in owners.get(root, [])}
            assert dists, f"{where} imports {root!r}, which no installed distribution provides"
            if not dists & provided:
                missing.setdefault(root, []).append(where)
    assert not missing, f"imported by the chapters but not installed by sdcourse[colab]: {missing}"
    assert {"sdcourse.video", "sdcourse.playground"} <= set(sources)


def test_the_colab_extra_brings_mp4_video_and_widgets():
    """Two needs that no import shows: imageio writes MP4 through the imageio-ffmpeg plugin (chapters 8 and 9),
    and the playground needs ipywidgets, 7.7 (Colab's front end) or 8 (JupyterLab), never an upgrade over Colab's."""
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["colab"]
    assert "imageio-ffmpeg>=0.5" in extra and "ipywidgets>=7.7,<9" in extra
    assert colab.PIP_REQUIREMENT.startswith("sdcourse[colab] @ ")
    video = (ROOT / "sdcourse" / "video.py").read_text()
    assert "ffmpeg" in video  # the MP4 writer goes through imageio's ffmpeg plugin
