#!/usr/bin/env bash
# The course's main job: execute every notebook headless and write them, with an HTML page each, to build/.
#
#   bash run_course.sh                      # every notebook
#   bash run_course.sh notebooks/01_*.ipynb # some of them
#
# The model is load_pipeline's default: Stable Diffusion v1-4 from the hub when it can be loaded,
# otherwise (offline, HF_HUB_OFFLINE=1) the bundled mini model. SDCOURSE_MODEL=mini forces the mini model.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

bash scripts/setup_env.sh

if [ "$#" -eq 0 ]; then
    set -- notebooks/*.ipynb
fi
.venv/bin/python scripts/build_notebooks.py --out build "$@"
