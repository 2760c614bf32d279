#!/usr/bin/env bash
# Install both ends of pyproject.toml's version ranges in fresh virtual environments and run the tests there.
#
#   bash scripts/test_version_ends.sh            # both ends, one after the other
#   bash scripts/test_version_ends.sh lowest     # or: newest
#
#   lowest   Python 3.11, torch 2.11.0 (Colab's), and the lowest release in each range of the package's own
#            dependencies (the LOWEST list below); the tools of the dev extra at their newest.
#   newest   Python 3.13 (Colab's), and the newest release pip finds of everything, torch included.
# The interpreters: $PYTHON_LOWEST and $PYTHON_NEWEST (default: pyenv's 3.11.7 and 3.13.0).
# Each end runs the unit tests (tests/), then chapters 1-4 with nbval on the mini model, offline.
# The two ends of IPython and ipywidgets that the dev tools cannot install beside (IPython 7.34, ipywidgets
# 7.7.1: Colab's) are tested by scripts/colab_like_run.sh instead.
#
# Both take torch from PyPI (a CUDA build; it runs on the CPU), so pip runs without this machine's pip
# configuration (PIP_CONFIG_FILE=/dev/null), which caps torch at the releases on its disk. Downloads: about
# 4 GB per end. Each environment lives in $SDCOURSE_ENDS (default ~/.cache/sdcourse-runs/ends/<end>) and is made
# anew on every run; a log per end is kept beside it. The last lines say which versions ran and how it went.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${SDCOURSE_ENDS:-$HOME/.cache/sdcourse-runs/ends}"
NO_DEPS="$(sed -n 's/^no-deps = \["\(.*\)"\]$/\1/p' "$ROOT/pyproject.toml")"
# The lowest release of each range in pyproject.toml's dependencies (the oldest with wheels for Python 3.11).
LOWEST=(torch==2.11.0 diffusers==0.42.0 transformers==5.0.0 accelerate==1.0.0 huggingface-hub==1.33.0
        safetensors==0.8.0 numpy==1.26.4 tqdm==4.66.0 scipy==1.11.4 ftfy==6.1.1 matplotlib==3.8.4
        pillow==10.4.0 imageio==2.34.0)
NOTEBOOKS=(notebooks/01_*.ipynb notebooks/02_*.ipynb notebooks/03_*.ipynb notebooks/04_*.ipynb)

run_end() {
    local end="$1" python venv log start status=0
    case "$end" in
        lowest) python="${PYTHON_LOWEST:-$HOME/.pyenv/versions/3.11.7/bin/python}" ;;
        newest) python="${PYTHON_NEWEST:-$HOME/.pyenv/versions/3.13.0/bin/python}" ;;
        *) echo "test_version_ends: unknown end '$end' (lowest or newest)" >&2; return 2 ;;
    esac
    venv="$BASE/$end/venv"; log="$BASE/$end/log.txt"; start=$SECONDS
    rm -rf "$venv"; mkdir -p "$BASE/$end"
    echo "test_version_ends: $end: making $venv with $("$python" --version 2>&1) (log: $log)"
    {
        "$python" -m venv "$venv" &&
        if [ "$end" = lowest ]; then
            printf '%s\n' "${LOWEST[@]}" > "$BASE/$end/constraints.txt" &&
            PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install --quiet -c "$BASE/$end/constraints.txt" \
                "${LOWEST[0]}" -e "$ROOT[dev]"
        else
            PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install --quiet --upgrade pip &&
            PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install --quiet --upgrade torch -e "$ROOT[dev]"
        fi &&
        PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install --quiet --no-deps "$NO_DEPS"
    } > "$log" 2>&1 || { echo "test_version_ends: $end: the install failed (see $log)" >&2; tail -5 "$log" >&2; return 1; }
    echo "test_version_ends: $end: installed in $((SECONDS - start)) s:" \
        "$("$venv/bin/python" -c 'import sys, importlib.metadata as md; print(f"Python {sys.version.split()[0]},", ", ".join(f"{n} {md.version(n)}" for n in ("torch", "diffusers", "transformers", "accelerate", "huggingface-hub", "safetensors", "numpy", "scipy", "matplotlib", "pillow", "ipython", "ipywidgets")))')"
    cd "$ROOT" || return 1
    HF_HUB_OFFLINE=1 SDCOURSE_MODEL=mini "$venv/bin/python" -m pytest tests "${NOTEBOOKS[@]}" -q -p no:cacheprovider \
        --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 --nbval-sanitize-with tests/nbval_sanitize.cfg \
        >> "$log" 2>&1 || status=$?
    echo "test_version_ends: $end: pytest (tests/ and chapters 1-4) exit $status after $((SECONDS - start)) s:" \
        "$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$log" | tail -1)"
    [ "$status" -eq 0 ] || grep -E "^(FAILED|ERROR) " "$log" | head -20 >&2
    return "$status"
}

ends=("${@:-lowest}"); [ "$#" -eq 0 ] && ends=(lowest newest)
overall=0
for end in "${ends[@]}"; do run_end "$end" || overall=1; done
exit "$overall"
