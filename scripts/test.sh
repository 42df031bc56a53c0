#!/usr/bin/env bash
# Set up the environments and run the tests: the whole suite on transformers 5.x and, side by
# side with it, the export, pipeline-conformance and benchmark tests on 4.57.x (the QA
# pipeline's last release, and the line Optimum supports), less the export logic that no
# transformers release changes, and the serving tier (runtime, Lambda, CLI errors) in an
# environment without torch, on small bundles built once here. Each run has its own pytest
# temp folder; the other reports follow the 5.x one.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all || exit 1
export TOKENIZERS_PARALLELISM=false
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# the serving tier's bundles (the 5.x run reuses them): built by the export side, once
export XLMR_TEST_BUNDLES="$scratch/bundles"
.venv/bin/python -m tests.bundles "$XLMR_TEST_BUNDLES" > "$scratch/bundles.log" 2>&1 \
  || { cat "$scratch/bundles.log"; exit 1; }
if .venv-serve/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"; then
  echo "the serving environment has torch: it must not"; exit 1
fi
.venv-serve/bin/python -m pytest -q --basetemp="$scratch/serve" -m serving "$@" \
  > "$scratch/serve.log" 2>&1 &
serve=$!
env -u XLMR_TEST_BUNDLES .venv-tf4/bin/python -m pytest -q --basetemp="$scratch/tf4" tests/test_runtime_conformance.py \
  tests/test_export.py tests/test_bench.py -m "not main_env_only" "$@" > "$scratch/tf4.log" 2>&1 &
tf4=$!
status=0
echo "== transformers 5.x (.venv)"
.venv/bin/python -m pytest -q --basetemp="$scratch/main" "$@" || status=1
wait "$tf4" || status=1
wait "$serve" || status=1
echo "== transformers 4.57 (.venv-tf4)"
cat "$scratch/tf4.log"
echo "== serving tier without torch (.venv-serve)"
cat "$scratch/serve.log"
exit $status
