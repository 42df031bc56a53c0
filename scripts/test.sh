#!/usr/bin/env bash
# Set up both environments and run the tests: the whole suite on transformers 5.x, then the
# export, pipeline-conformance and benchmark tests on 4.57.x (the QA pipeline's last release,
# and the line Optimum supports).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all || exit 1
export TOKENIZERS_PARALLELISM=false
status=0
echo "== transformers 5.x (.venv)"
.venv/bin/python -m pytest -q "$@" || status=1
echo "== transformers 4.57 (.venv-tf4)"
.venv-tf4/bin/python -m pytest -q tests/test_runtime_conformance.py tests/test_export.py tests/test_bench.py "$@" || status=1
exit $status
