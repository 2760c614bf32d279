#!/usr/bin/env bash
# The whole test suite: the package's unit tests, then every notebook executed top to bottom (nbval).
#
#   bash run_tests.sh            # extra arguments go to pytest, e.g. bash run_tests.sh -x -k loader
#
# Runs offline (HF_HUB_OFFLINE=1) with the bundled mini model on whatever device is there. Without extra
# arguments it then runs every notebook a second time, on an SD v1-4-shaped stand-in built on the spot
# (sdcourse/standin.py: 512 px, PNDM, random weights), so that every "if it is SD" setting runs too; two
# notebooks run at a time there, the CPU cores shared between their kernels. Before that, the notebooks run
# once more on one thread with older CPU kernels, so that a checked output that depends on the machine fails
# here and not only on someone else's machine (scripts/check_outputs_elsewhere.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

bash scripts/setup_env.sh

export HF_HUB_OFFLINE=1
export SDCOURSE_MODEL="${SDCOURSE_MODEL:-mini}"  # never the big model, even if it is in the local cache

targets=(tests)
if compgen -G "notebooks/*.ipynb" > /dev/null; then
    targets+=(notebooks)
else
    echo "run_tests: no notebooks yet (notebooks/*.ipynb); running the unit tests only"
fi

status=0
.venv/bin/python -m pytest "${targets[@]}" --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 \
    --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=25 "$@" || status=$?

if [ "$#" -eq 0 ] && [ "${targets[*]}" = "tests notebooks" ]; then
    echo "run_tests: the checked cells again, on one thread with older CPU kernels (scripts/check_outputs_elsewhere.py)"
    .venv/bin/python scripts/check_outputs_elsewhere.py || status=$?
    echo "run_tests: every notebook again, on the SD v1-4-shaped stand-in (scripts/run_notebooks.py)"
    standin="$(mktemp -d)"
    .venv/bin/python scripts/run_notebooks.py --standin "$standin/sd" --jobs 2 || status=$?
    rm -rf "$standin"
fi

if [ "$status" -eq 5 ]; then
    echo "run_tests: pytest collected no tests (exit 5); check the paths and the -k/-m filters" >&2
fi
exit "$status"
