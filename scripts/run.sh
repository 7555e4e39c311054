#!/usr/bin/env bash
# Set up .venv, run the retrain flow on the bundled sample corpus (the DVC stages, the champion gate,
# the model registry), then print the evaluation table, the registry state and an example search.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/offline.sh
export PATH="$PWD/.venv/bin:$PATH"
python -m flows.retrain "$@"
papersim summary
echo
papersim registry list
echo
echo '$ papersim search "contrastive learning of sentence embeddings" --model champion -k 5'
papersim search "contrastive learning of sentence embeddings" --model champion -k 5
echo
echo "Browse the papers: .venv/bin/papersim web   (pages on http://127.0.0.1:8000/; --model champion serves the registry's champion)"
