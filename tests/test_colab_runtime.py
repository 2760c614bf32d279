"""The course's Colab install, resolved by pip against Colab's published runtime (tests/data/colab_runtime.txt).

The first cell of every notebook installs ``sdcourse[colab]`` with a constraints file that holds Colab's own
packages at the versions the runtime has. Here pip's resolver answers the question for Colab's Python and
Colab's versions (``pip install --dry-run --report``, nothing is installed): with every package of the
runtime held except those the course is allowed to upgrade, does the install resolve? If a range in
pyproject.toml ever needs a newer IPython, ipywidgets, torch (or anything else Colab has), this fails and
names the clash. It reads the package index (PyPI), as a Colab runtime does.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdcourse import colab

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "tests" / "data" / "colab_runtime.txt"
# What the course may change on Colab: Colab ships an older diffusers, and diffusers 0.42 needs a newer hub.
MAY_CHANGE = {"diffusers", "huggingface-hub"}
# Colab's torch comes from PyTorch's own index with CUDA 12.8 libraries; PyPI's torch of the same version
# names other CUDA packages. Colab's torch is held, so pip never touches these there.
CUDA_BUILD = re.compile(r"^(nvidia-|cuda-|triton$)")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_runtime() -> dict:
    """``{"python": "3.13.15", "google-colab requires": [...], "pip freeze": {name: version}}``."""
    sections, current = {}, None
    for line in RUNTIME.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            current.append(line)
    freeze = {}
    for line in sections["pip freeze"]:
        name, version = line.split("==")
        freeze[normal(name)] = version.split("+")[0]  # 2.11.0+cu128 -> 2.11.0: PyPI has no local versions
    return {"python": sections["python"][0], "google-colab requires": sections["google-colab requires"],
            "pip freeze": freeze}


def test_the_runtime_file_has_colabs_pins():
    runtime = read_runtime()
    assert runtime["python"].startswith("3.13")
    freeze = runtime["pip freeze"]
    assert {k: freeze[k] for k in ("ipython", "ipykernel", "notebook", "ipywidgets", "torch")} == {
        "ipython": "7.34.0", "ipykernel": "6.17.1", "notebook": "6.5.7", "ipywidgets": "7.7.1", "torch": "2.11.0"}
    assert "ipython==7.34.0" in runtime["google-colab requires"]


@pytest.fixture(scope="module")
def colab_resolution(tmp_path_factory):
    """pip's report for the Colab install, with the held packages of the first cell's own ``held``."""
    tmp = tmp_path_factory.mktemp("colab")
    runtime = read_runtime()
    freeze = runtime["pip freeze"]
    # the cell's own function, taken from the cell: run it as Colab would, with pip replaced by nothing
    namespace = {"__name__": "__main__"}
    google = type(sys)("google")
    google.__path__, google.colab = [], type(sys)("google.colab")
    saved = {k: sys.modules.get(k) for k in ("google", "google.colab")}
    sys.modules.update({"google": google, "google.colab": google.colab})
    real_run = subprocess.run
    subprocess.run = lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 0)
    try:
        exec(compile(colab.setup_cell_source(), "<first cell>", "exec"), namespace)
    finally:
        subprocess.run = real_run
        for k, v in saved.items():
            sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)
    # Colab's kernel has imported who knows what: hold everything it has, but what the course may change
    imported = [n for n in freeze if n not in MAY_CHANGE and not CUDA_BUILD.match(n)]
    pins = namespace["held"](freeze, runtime["google-colab requires"], imported)
    (tmp / "pins.txt").write_text("\n".join(pins))
    source = tmp / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT / "sdcourse", source / "sdcourse", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "-w", str(tmp / "wheel"), str(source)], capture_output=True, text=True)
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    [built] = (tmp / "wheel").glob("sdcourse-*.whl")
    python = ".".join(runtime["python"].split(".")[:2])
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
           "--report", str(tmp / "report.json"), "--target", str(tmp / "never"),
           "--python-version", python, "--only-binary=:all:", "-c", str(tmp / "pins.txt"), f"{built}[colab]"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location"))
    assert done.returncode == 0, f"the Colab install does not resolve with Colab's packages held:\n{errors[-3000:]}"
    report = json.loads((tmp / "report.json").read_text())
    chosen = {normal(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}
    return {"pins": pins, "chosen": chosen, "freeze": freeze}


def test_the_colab_install_keeps_colabs_pinned_packages(colab_resolution):
    chosen, freeze = colab_resolution["chosen"], colab_resolution["freeze"]
    for name in (*colab.ALWAYS_HELD, "widgetsnbextension"):
        assert name in chosen, f"{name} is not part of the resolution, so this test says nothing about it"
        assert chosen[name] == freeze[name], f"the install would change Colab's {name}: {freeze[name]} -> {chosen[name]}"
    assert set(colab.ALWAYS_HELD) <= {p.split("==")[0] for p in colab_resolution["pins"]}


def test_the_colab_install_changes_only_what_it_may(colab_resolution, capsys):
    chosen, freeze = colab_resolution["chosen"], colab_resolution["freeze"]
    changed = {n: (freeze[n], v) for n, v in chosen.items() if n in freeze and freeze[n] != v and not CUDA_BUILD.match(n)}
    new = sorted(n for n in chosen if n not in freeze and not CUDA_BUILD.match(n))
    assert not CUDA_BUILD.match("torch") and chosen["torch"] == freeze["torch"]
    assert set(changed) <= MAY_CHANGE, changed
    assert "diffusers" in changed and chosen["diffusers"].startswith("0.42.")  # Colab's 0.39 is too old
    assert "sdcourse" in new
    with capsys.disabled():
        print(f"\nColab install: changes {changed}; adds {new}")
