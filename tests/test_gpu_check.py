"""scripts/gpu_check.sh: one clear sentence without CUDA; every step up to the GPU runs in its CPU dry run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **env}, timeout=600)


def test_without_cuda_it_stops_with_one_sentence():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run()
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_options_are_named():
    result = run("--fast")
    assert result.returncode == 2 and "'--fast'" in result.stderr


def test_dry_run_on_the_cpu_runs_a_notebook_and_the_benchmark(tmp_path):
    result = run("--dry-run-cpu", str(tmp_path), "notebooks/03_inside_the_pipeline.ipynb")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_notebooks.json").read_text())
    [row] = data["rows"]
    assert row["notebook"] == "03_inside_the_pipeline.ipynb" and row["ok"]
    assert row["unet_calls"] == row["declared_calls"] and row["seconds"] > 0
    assert data["model"] == "tiny SD v1-4 stand-in" and data["machine"]["gpu"] == "no GPU"
    assert (tmp_path / "gpu_notebooks.md").read_text().startswith("# Notebooks on the tiny SD v1-4 stand-in")
    bench = json.loads((tmp_path / "gpu_fullsize.json").read_text())
    assert bench["smoke_cpu"] and not bench["recorded"]
