#!/usr/bin/env bash
# Create the course's virtual environment (.venv in the repository) and install everything into it.
#
#   bash scripts/setup_env.sh
#
# Safe to run again: when nothing changed since the last run it checks and returns in a second.
# Settings (environment variables, all optional):
#   SDCOURSE_VENV     where the environment lives              (default: .venv in the repository)
#   PYTHON            the interpreter that creates it          (default: python3)
#   TORCH_SPEC        the torch to install when none is there  (default: torch==2.13.0)
#   TORCH_INDEX_URL   where pip finds that torch, e.g. https://download.pytorch.org/whl/cpu
#                     for a small CPU-only build (default: pip's own configuration)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START=$SECONDS
cd "$ROOT"
VENV="${SDCOURSE_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    echo "setup: creating the virtual environment .venv"
    "${PYTHON:-python3}" -m venv "$VENV"
fi

# open-clip-torch is installed without its dependencies: they include torchvision, whose PyPI build
# does not match every torch build; the course only needs the CLIP vocabulary file in the wheel.
NO_DEPS="$(sed -n 's/^no-deps = \["\(.*\)"\]$/\1/p' pyproject.toml)"
STAMP="$VENV/.sdcourse-setup"
WANT="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-32)"

installed() {  # the package (from this folder), its tools and the vocabulary wheel are there
    "$PY" - "$NO_DEPS" "$ROOT" <<'PY' 2>/dev/null
import importlib.metadata as md, importlib.util, pathlib, sys
name, version = sys.argv[1].split("==")
assert md.version(name) == version
for module in ("torch", "diffusers", "transformers", "open_clip", "nbval", "nbclient", "ipykernel"):
    assert importlib.util.find_spec(module) is not None, module
origin = pathlib.Path(importlib.util.find_spec("sdcourse").origin).resolve()
assert pathlib.Path(sys.argv[2]).resolve() in origin.parents
PY
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && installed; then
    echo "setup: .venv is up to date"
    exit 0
fi

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: installing ${TORCH_SPEC:-torch==2.13.0} (no torch in .venv yet)"
    "$PY" -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
fi

echo "setup: installing sdcourse and its tools (pip install -e .[dev])"
"$PY" -m pip install --quiet -e ".[dev]"

echo "setup: installing $NO_DEPS without its dependencies"
"$PY" -m pip install --quiet --no-deps "$NO_DEPS"

installed || { echo "setup: the installation is incomplete; see pip's messages above" >&2; exit 1; }
echo "$WANT" > "$STAMP"
echo "setup: done in $((SECONDS - START)) s ($("$PY" -c 'import torch, diffusers, transformers; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}")' 2>/dev/null))"
