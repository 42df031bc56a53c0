#!/usr/bin/env bash
# Re-create benchmarks/results/ (run in the 4.57 environment, where Optimum is installed):
#   bash scripts/setup.sh tf4 && bash benchmarks/run_recorded.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv-tf4/bin/python
# one folder per machine (ISA and CPU family): figures from different CPUs are never compared
OUT=benchmarks/results/$($PY -c "from benchmarks.harness import machine_folder; print(machine_folder())")
$PY -m benchmarks.make_models benchmarks/models
$PY -m xlmr_serverless.cli bench --model benchmarks/models/minilm-roberta --task feature-extraction \
  --batch-sizes 1,8 --seq-lens 16,128,256 --rounds 5 --output $OUT/minilm-feature-extraction
$PY -m xlmr_serverless.cli bench --model benchmarks/models/xlmr-base-text-classification --task text-classification \
  --batch-sizes 1,8 --seq-lens 16,128,512 --rounds 4 --min-agreement 0 \
  --output $OUT/xlmr-base-text-classification
# Optimum's fill-mask scores all 250,002 pieces at every position: batch 1 keeps its run short
$PY -m xlmr_serverless.cli bench --model benchmarks/models/xlmr-base-fill-mask --task fill-mask \
  --batch-sizes 1 --seq-lens 16,128,512 --rounds 4 --min-agreement 0 \
  --output $OUT/xlmr-base-fill-mask
