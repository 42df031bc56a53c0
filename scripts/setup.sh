#!/usr/bin/env bash
# Create the project's environments (idempotent). Usage: scripts/setup.sh [main|tf4|sam|all]
#   .venv      transformers 5.x: what a new user installs (export + lambda + tests)
#   .venv-tf4  transformers 4.57.x: the QA pipeline's reference and Optimum's supported line
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=${1:-all}

make_env() {  # name, extra pip args...
  local env=$1; shift
  if [ ! -x "$env/bin/python" ]; then "$PY" -m venv "$env"; fi
  "$env/bin/pip" install -q --upgrade pip
  # torch first and pinned: a loose torch requirement pulls a multi-GB CUDA build
  "$env/bin/pip" install -q torch==2.13.0
  "$env/bin/pip" install -q -e ".[export,lambda,test,bench]" "$@"
}

if [ "$want" = main ] || [ "$want" = all ]; then make_env .venv "transformers>=5,<6"; fi
if [ "$want" = tf4 ] || [ "$want" = all ]; then make_env .venv-tf4 "transformers==4.57.*" "optimum-onnx==0.1.0"; fi
# aws-sam-cli in its own environment: its pins would fight the project's
if { [ "$want" = sam ] || [ "$want" = all ]; } && [ ! -x .venv-sam/bin/sam ]; then
  "$PY" -m venv .venv-sam && .venv-sam/bin/pip install -q aws-sam-cli
fi
