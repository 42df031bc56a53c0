#!/usr/bin/env bash
# Set up both environments and run the tests: the whole suite on transformers 5.x and, side by
# side with it, the export, pipeline-conformance and benchmark tests on 4.57.x (the QA
# pipeline's last release, and the line Optimum supports), less the export logic that no
# transformers release changes. Each run has its own pytest temp folder; the 4.57 report
# follows the 5.x one.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all || exit 1
export TOKENIZERS_PARALLELISM=false
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
.venv-tf4/bin/python -m pytest -q --basetemp="$scratch/tf4" tests/test_runtime_conformance.py \
  tests/test_export.py tests/test_bench.py -m "not main_env_only" "$@" > "$scratch/tf4.log" 2>&1 &
tf4=$!
status=0
echo "== transformers 5.x (.venv)"
.venv/bin/python -m pytest -q --basetemp="$scratch/main" "$@" || status=1
wait "$tf4" || status=1
echo "== transformers 4.57 (.venv-tf4)"
cat "$scratch/tf4.log"
exit $status
