#!/usr/bin/env bash
# Create the project's environments (idempotent). Usage: scripts/setup.sh [main|tf4|sam|serve|all]
#   .venv        transformers 5.x: what a new user installs (export + lambda + tests), and the
#                reference libraries the tests compare with (FlagEmbedding, sentence-transformers)
#   .venv-tf4    transformers 4.57.x: the QA pipeline's reference and Optimum's supported line
#   .venv-sam    aws-sam-cli on its own: its pins would fight the project's
#   .venv-serve  the serving side alone (runtime + lambda, no torch): the fast serving tier
# and, where apt-get can, the allocator the Lambda image preloads (libtcmalloc-minimal4).
# The environments install side by side; --no-compile leaves bytecode to the first import
# (compiling all of torch at install costs ~30 s of a 41 s install here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=${1:-all}
PIP=(install -q --no-compile --disable-pip-version-check)

make_env() {  # name, extra pip args...
  local env=$1; shift
  if [ ! -x "$env/bin/python" ]; then "$PY" -m venv "$env"; fi
  # torch first and pinned: a loose torch requirement pulls a multi-GB CUDA build
  "$env/bin/pip" "${PIP[@]}" torch==2.13.0
  "$env/bin/pip" "${PIP[@]}" -e ".[export,lambda,test,bench]" "$@"
}

make_serve() {  # what a Lambda image holds, plus the test runners; never torch
  if [ ! -x .venv-serve/bin/python ]; then "$PY" -m venv .venv-serve; fi
  .venv-serve/bin/pip "${PIP[@]}" -e ".[lambda]" pytest "moto[s3]" awslambdaric openai huggingface_hub \
    hypothesis
}

make_sam() {
  if [ ! -x .venv-sam/bin/sam ]; then
    "$PY" -m venv .venv-sam && .venv-sam/bin/pip "${PIP[@]}" aws-sam-cli
  fi
}

make_allocator() {  # lambda/Dockerfile preloads tcmalloc: its tests and benchmarks do too
  ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 && return 0
  if command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q libtcmalloc-minimal4 > /dev/null 2>&1 \
      || { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q libtcmalloc-minimal4 > /dev/null 2>&1; } \
      || echo "note: libtcmalloc-minimal4 not installed; the image-environment test will skip"
  fi
  return 0
}

make_allocator
pids=()
# the references the 5.x run tests against: FlagEmbedding (BGE-M3) and sentence-transformers
if [ "$want" = main ] || [ "$want" = all ]; then
  make_env .venv "transformers>=5,<6" "FlagEmbedding==1.4.2" "sentence-transformers>=3" & pids+=($!)
fi
if [ "$want" = tf4 ] || [ "$want" = all ]; then
  make_env .venv-tf4 "transformers==4.57.*" "optimum-onnx==0.1.0" & pids+=($!)
fi
if [ "$want" = sam ] || [ "$want" = all ]; then make_sam & pids+=($!); fi
if [ "$want" = serve ] || [ "$want" = all ]; then make_serve & pids+=($!); fi
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
