"""Run the notebooks' checked cells again as another machine would: one CPU thread, older vector instructions.

    python scripts/check_outputs_elsewhere.py                  # every notebook
    python scripts/check_outputs_elsewhere.py notebooks/12_*.ipynb

A cell marked for nbval's output check (``# NBVAL_CHECK_OUTPUT`` or the ``nbval-check-output`` tag) must
print the same on every machine, since its committed output was made on one. A float whose last digits
depend on the CPU's vector instructions, the thread count or the order of a sum passes on the machine that
made it and fails elsewhere. This runs the notebooks under nbval once more, with torch on one thread and
with the next older instruction set than this CPU's (AVX-512 -> AVX2 -> none) for torch's own kernels
(``ATEN_CPU_CAPABILITY``), oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) and MKL's matrix products
(``MKL_ENABLE_INSTRUCTIONS``), so such a cell fails here too. Exit status: pytest's.

Chapter 13 is left out unless named: on one thread its training alone would take a quarter of an hour, and its
checked cells print settings, counts, captions drawn by Python's ``random`` and floats rounded to a few digits,
none of which a CPU's vector instructions change (its training results are asserted, not checked).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW = ("13_train_your_own.ipynb",)  # see above
NBVAL_ARGS = ["--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=1200",
              "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "-p", "no:cacheprovider", "-q"]
# this CPU's capability (torch's name) -> (torch, oneDNN, MKL) settings one step older
OLDER = {"AVX512": ("avx2", "AVX2", "AVX2"), "AVX2": ("default", "SSE41", "SSE4_2")}


def other_cpu_env(capability: str, environ=None) -> dict:
    """The environment of a kernel that computes as an older CPU with one thread would.

    ``capability`` is ``torch.backends.cpu.get_cpu_capability()`` ("AVX512", "AVX2", "DEFAULT", ...).
    Example: ``other_cpu_env("AVX512")["ATEN_CPU_CAPABILITY"] == "avx2"``."""
    env = dict(os.environ if environ is None else environ)
    aten, onednn, mkl = OLDER.get(capability.upper(), ("default", None, None))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ATEN_CPU_CAPABILITY=aten, HF_HUB_OFFLINE="1")
    env.setdefault("SDCOURSE_MODEL", "mini")
    if onednn:
        env["ONEDNN_MAX_CPU_ISA"] = onednn
    if mkl:
        env["MKL_ENABLE_INSTRUCTIONS"] = mkl
    return env


def main(argv=None) -> int:
    import torch

    paths = list(argv if argv is not None else sys.argv[1:]) or [
        str(p) for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) if p.name not in SLOW]
    capability = torch.backends.cpu.get_cpu_capability()
    env = other_cpu_env(capability)
    print(f"check_outputs_elsewhere: this CPU runs {capability} kernels; the checked cells again with "
          f"{env['ATEN_CPU_CAPABILITY']} and one thread", flush=True)
    status = subprocess.call([sys.executable, "-m", "pytest", *paths, *NBVAL_ARGS], env=env, cwd=ROOT)
    if status not in (0, 5):
        print("check_outputs_elsewhere: a checked cell printed something else on another CPU setting. Print what "
              "its assert guarantees (a bound met, a value rounded to what is asserted), not the raw float digits, "
              "or take the cell out of the output check.", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
