#!/usr/bin/env bash
# A Colab-like run of the course, on your own machine (no GPU needed):
#
#   bash scripts/colab_like_run.sh [--venv DIR] [--out DIR] [--python PYTHON]
#
# 1. a fresh virtual environment with torch 2.13.0 (standing in for Colab's CUDA build) and Colab's exact
#    versions of its notebook stack and ML libraries (read from tests/data/colab_runtime.txt);
# 2. the course installed there by the notebooks' own first cell, run in a kernel that believes it is in
#    Colab, then a check that IPython, ipykernel, notebook, tornado and ipywidgets kept Colab's versions;
# 3. chapters 1, 4 and 11 executed top to bottom in that environment's kernel (mini model, offline);
# 4. chapter 11 in classic Notebook 6.5.7 with ipywidgets 7.7.1, driven by headless Chromium: Generate
#    clicked, the picture checked, screenshots taken.
#
# The details, and every setting, are in scripts/colab_like_run.py. Settings as environment variables:
#   SDCOURSE_COLAB_VENV     the environment, recreated each run (default ~/.cache/sdcourse-runs/colab-like/venv)
#   SDCOURSE_COLAB_OUT      executed notebooks, screenshots, summary (default ~/.cache/sdcourse-runs/colab-like/out)
#   SDCOURSE_COLAB_PYTHON   the Python 3.11 that creates the environment (default python3.11)
#   SDCOURSE_DRIVER_PYTHON  the Python that drives the run; it needs Playwright (default .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRIVER="${SDCOURSE_DRIVER_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$DRIVER" ]; then
    echo "colab-like run: $DRIVER is missing; run bash scripts/setup_env.sh first (it installs Playwright)" >&2
    exit 2
fi
exec "$DRIVER" "$ROOT/scripts/colab_like_run.py" "$@"
