#!/usr/bin/env bash
# Every notebook on a full-size Stable Diffusion v1-4 (random weights, built from configs, no download)
# in float16 on a CUDA GPU, then the full-size GPU benchmark.
#
#   bash scripts/gpu_check.sh                 # all notebooks, then bench_gpu_fullsize.py --batches 1 8 --skip-compile
#   bash scripts/gpu_check.sh --quick         # chapters 01 and 04, then the benchmark at batch 1 only
#   bash scripts/gpu_check.sh --dry-run-cpu DIR [NOTEBOOK...]
#                                             # no GPU: the same steps with the tiny stand-in on the CPU,
#                                             # results into DIR only (tests the script, measures nothing)
#
# Records per notebook the wall time, the UNet calls and the peak GPU memory in
# benchmarks/results/gpu_notebooks.{json,md} (machine named), and the benchmark in gpu_fullsize.{json,md}.
# Planned to finish within 10 minutes on one H200-class GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

mode=full
out=benchmarks/results
notebooks=()
case "${1:-}" in
    --quick) mode=quick; shift ;;
    --dry-run-cpu)
        mode=dry
        if [ -z "${2:-}" ]; then echo "gpu_check: --dry-run-cpu needs a results folder, e.g. --dry-run-cpu /tmp/gpu_check" >&2; exit 2; fi
        out="$2"; shift 2; notebooks=("$@"); set -- ;;
    "") ;;
    *) echo "gpu_check: unknown option '$1'; use --quick, --dry-run-cpu DIR, or nothing" >&2; exit 2 ;;
esac
if [ "$#" -gt 0 ]; then echo "gpu_check: unexpected argument '$1'" >&2; exit 2; fi

if [ "$mode" != dry ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: this machine has no CUDA GPU visible to torch, so nothing was measured; run it on a GPU machine (or use --dry-run-cpu DIR to test the script here)." >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

if [ "$mode" = dry ]; then
    export CUDA_VISIBLE_DEVICES=""
    "$PY" scripts/run_notebooks.py --standin "$work/sd" --out "$out" --name gpu_notebooks "${notebooks[@]}"
    "$PY" benchmarks/bench_gpu_fullsize.py --smoke-cpu --batches 1 --steps 2 --out "$out"
elif [ "$mode" = quick ]; then
    "$PY" scripts/run_notebooks.py --standin "$work/sd" --full-size --no-check-calls --out "$out" --name gpu_notebooks \
        notebooks/01_pipeline.ipynb notebooks/04_klms_loop_by_hand.ipynb
    "$PY" benchmarks/bench_gpu_fullsize.py --batches 1 --skip-compile
else
    "$PY" scripts/run_notebooks.py --standin "$work/sd" --full-size --no-check-calls --out "$out" --name gpu_notebooks
    "$PY" benchmarks/bench_gpu_fullsize.py --batches 1 8 --skip-compile
fi
echo "gpu_check: done in $(( $(date +%s) - start )) s; results in $out (gpu_notebooks.*, and gpu_fullsize.* unless --dry-run-cpu)"
