"""Checked notebook outputs must be the same on every machine: the other-CPU pass and a scan of the sources."""
import json
import re
import subprocess
import sys

import nbformat
import pytest
import torch

from conftest import ROOT, load_script

elsewhere = load_script("scripts/check_outputs_elsewhere.py")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def checked_cells(path):
    nb = json.loads(path.read_text())
    for index, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and ("NBVAL_CHECK_OUTPUT" in source
                                            or "nbval-check-output" in cell.get("metadata", {}).get("tags", [])):
            yield index, source


@pytest.mark.parametrize("capability, aten, onednn", [("AVX512", "avx2", "AVX2"), ("AVX2", "default", "SSE41"),
                                                       ("DEFAULT", "default", None)])
def test_the_other_cpu_is_older_and_single_threaded(capability, aten, onednn):
    env = elsewhere.other_cpu_env(capability, {"PATH": "/bin"})
    assert env["ATEN_CPU_CAPABILITY"] == aten and env.get("ONEDNN_MAX_CPU_ISA") == onednn
    assert env["OMP_NUM_THREADS"] == "1" and env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin"


def _notebook(folder, name, source, output):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n" + source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    cell.execution_count = 1  # nbval refuses a cell with outputs that never ran
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / name
    nbformat.write(nb, path)
    return path


def test_a_machine_dependent_checked_output_fails_and_an_exact_one_passes(tmp_path):
    here = f"{torch.backends.cpu.get_cpu_capability()} {torch.get_num_threads()}\n"
    code = "import torch\nprint(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())\n"
    machine = _notebook(tmp_path, "machine.ipynb", code, here)
    exact = _notebook(tmp_path, "exact.ipynb", "import torch\nprint(torch.ones(2, 3).sum().item())\n", "6.0\n")
    run = [sys.executable, str(ROOT / "scripts" / "check_outputs_elsewhere.py")]
    failed = subprocess.run(run + [str(machine)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert failed.returncode == 1, failed.stdout[-2000:]
    assert "Cell outputs differ" in failed.stdout and "mismatch 'stdout'" in failed.stdout and "a checked cell printed something else" in failed.stderr
    passed = subprocess.run(run + [str(exact)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert passed.returncode == 0, passed.stdout[-2000:]


# a float in scientific or "general" notation of a difference: its last digits are rounding noise
NOISY = re.compile(r"\{[^{}]*(diff|deviation|error|residual|delta)[^{}]*:[^{}]*[eg]\}", re.IGNORECASE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checked_cells_print_no_raw_float_differences(path):
    found = [f"cell {index}: {match.group(0)}" for index, source in checked_cells(path)
             for match in NOISY.finditer(source)]
    assert not found, f"{path.name} prints raw float differences in checked cells (print the bound instead): {found}"


def test_the_scan_catches_the_old_form():
    old = 'print(f"UNet output with and without recording differs by {difference:.1e}; back: {restored}")'
    assert NOISY.search(old) and not NOISY.search('print(f"below {tolerance:.0e}: {difference < tolerance}")')


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_markers_are_cell_tags_not_comments(path):
    """A learner reads the teaching cells: nbval's markers live in the cells' tags, not in their first line."""
    nb = json.loads(path.read_text())
    marked = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "NBVAL_" in "".join(c["source"])]
    assert not marked, f"{path.name}: cells {marked} carry an nbval comment; use the cell tag (nbval-check-output)"
    if not path.name.startswith("11_"):  # the playground's outputs are widgets: nothing there is checked
        assert any(True for _ in checked_cells(path)), f"{path.name} has no checked cell"
