"""A notebook cell that needs more than half of nbval's cell timeout fails the test run (tests/conftest.py), so that
the test command also passes on a machine half as fast as this one."""
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def test_a_cell_past_half_the_timeout_fails_and_names_its_time(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time; time.sleep(3)"), nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "slow.ipynb")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}",
                           "tests/test_run_notebooks.py::test_a_file_that_is_not_a_notebook_fails_alone",
                           str(tmp_path / "slow.ipynb"), "--nbval-lax", "--nbval-current-env",
                           "--nbval-cell-timeout=4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "more than half of the cell timeout (4 s)" in done.stdout and "1 failed, 2 passed" in done.stdout
