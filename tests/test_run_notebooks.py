"""scripts/run_notebooks.py: the runner of the stand-in pass refuses bad options before it runs anything."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
run = load_script("scripts/run_notebooks.py")


@pytest.mark.parametrize("jobs", ["0", "65"])
def test_bad_jobs_are_refused_in_one_line(jobs):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), "--model", "mini", "--jobs", jobs],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "--jobs must be 1 to 64" in done.stderr and "Traceback" not in done.stderr


def test_a_file_that_is_not_a_notebook_fails_alone(tmp_path):
    junk = tmp_path / "03_junk.ipynb"
    junk.write_text("not JSON {")
    row = run.run_notebook(junk)
    assert row["ok"] is False and row["error"].startswith("not a readable notebook file")
