#!/usr/bin/env bash
# The GPU check (under 8 minutes on one GPU): the GPU-marked tests (STN layers and augmentation
# on CUDA equal to CPU), then STN vs plain training throughput and peak memory for the paper's
# AlexNet on CIFAR-10-shaped tensors and the PTB LSTM at full size, with bf16 autocast.
#
#   benchmarks/gpu_check.sh [RESULTS_DIR [DOC]]
#
# Results merge into RESULTS_DIR/<machine>.json (default benchmarks/results) and the tables are
# regenerated in DOC (default docs/benchmarks.md). Without CUDA it says so in one line and
# exits 1; nothing else runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
RESULTS=${1:-benchmarks/results}
DOC=${2:-docs/benchmarks.md}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing run" >&2
    exit 1
fi
start=$(date +%s)
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'

echo "== GPU-marked tests"
timeout 180 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests

echo "== STN vs plain throughput and memory (AlexNet, PTB LSTM; full size; bf16 autocast)"
timeout 360 "$PY" -m benchmarks --only stn_cost --device cuda --amp --networks alexnet,lstm \
    --results "$RESULTS" --doc "$DOC"

echo "gpu_check: done in $(( $(date +%s) - start )) s"
