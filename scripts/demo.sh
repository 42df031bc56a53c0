#!/usr/bin/env bash
# The main job, offline, on a fresh machine: set up, convert the shipped all-MiniLM-L6-v2 to
# RoBERTa, export an int8 feature-extraction bundle, answer one API Gateway request through
# the Lambda handler and print the response. Any `xlmr demo` flag passes through, e.g.
#   scripts/demo.sh --model FacebookAI/xlm-roberta-base --task fill-mask   (needs the hub)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh main
exec .venv/bin/xlmr demo --output out "$@"
