#!/usr/bin/env bash
# Set up .venv and run the whole test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,ray  # Ray for the encoding-engine test
source scripts/offline.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"
