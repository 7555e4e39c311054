#!/usr/bin/env bash
# Set up .venv, run the pipeline on the bundled sample corpus with DVC, print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/offline.sh
export PATH="$PWD/.venv/bin:$PATH"
dvc repro
papersim summary
