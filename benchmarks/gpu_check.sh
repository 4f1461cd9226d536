#!/usr/bin/env bash
# The GPU check, one call of about 5 minutes on one GPU:
#   1. the GPU-marked tests (STN layers and augmentation on CUDA equal to CPU);
#   2. every experiment's --smoke variant on CUDA, all its methods, in-process (debug launcher),
#      on small synthetic CIFAR-10 / PTB files; every result.json must be "ok" and finite;
#   3. one full-size STN epoch of cifar10-alexnet and of ptb-lstm on synthetic data of the real
#      sizes (50000 + 10000 images; a 10000-word corpus of PTB's token counts), timed: ms per
#      weight step, validation and test evaluation seconds, peak memory;
#   4. with --bench: STN vs plain throughput and peak memory (benchmarks/bench_stn_cost.py,
#      AlexNet and the PTB LSTM at full size, bf16 autocast), merged into RESULTS_DIR/<machine>.json
#      and the tables of DOC (adds about 6 minutes).
#
#   benchmarks/gpu_check.sh [--bench] [RESULTS_DIR [DOC]]
#
# Without CUDA it says so in one line and exits 1 at once; nothing else runs. Every stage runs
# even if an earlier one failed (device time is scarce: one call reports everything); the exit
# code is 1 if any stage failed. PY selects the interpreter (default .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
BENCH=0
if [ "${1:-}" = "--bench" ]; then BENCH=1; shift; fi
RESULTS=${1:-benchmarks/results}
DOC=${2:-docs/benchmarks.md}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing run" >&2
    exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
failed=()

stage() {  # stage NAME SECONDS CMD...: run CMD under a time limit, time it, record a failure
    local name=$1 limit=$2 t0 rc
    shift 2
    echo "== $name"
    t0=$(date +%s)
    timeout "$limit" "$@"
    rc=$?
    [ "$rc" -eq 124 ] && echo "   timed out after $limit s"
    echo "   $name: rc $rc, $(( $(date +%s) - t0 )) s"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")'

stage "GPU-marked tests" 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests

stage "small synthetic data" 60 "$PY" -m benchmarks.gpu_check data "$WORK/small"
for exp in digits-mlp cifar10-alexnet ptb-lstm ptb-output-dropout ptb-schedule-init; do
    case $exp in
        cifar10-*) data=(--set "task.data_dir=$WORK/small/cifar10") ;;
        ptb-*) data=(--set "task.data_dir=$WORK/small/ptb") ;;
        *) data=() ;;
    esac
    # the smoke variants set launch.gpus_per_node=0 (for SLURM); in-process, jobs take CUDA
    stage "smoke $exp (CUDA)" 150 "$PY" -m experiments run "$exp" --smoke --launcher debug \
        --runs-dir "$WORK/runs" ${data[@]+"${data[@]}"}
done
stage "smoke results" 30 "$PY" -m benchmarks.gpu_check verify "$WORK/runs"

stage "full-size synthetic data" 120 "$PY" -m benchmarks.gpu_check data "$WORK/full" --full
stage "CIFAR-10 STN epoch, full size" 240 \
    "$PY" -m benchmarks.gpu_check epoch cifar10 "$WORK/full/cifar10"
stage "PTB STN epoch, full size" 300 "$PY" -m benchmarks.gpu_check epoch ptb "$WORK/full/ptb"

if [ "$BENCH" -eq 1 ]; then
    stage "STN vs plain throughput and memory (bf16)" 420 "$PY" -m benchmarks --only stn_cost \
        --device cuda --amp --networks alexnet,lstm --results "$RESULTS" --doc "$DOC"
fi

echo "gpu_check: done in $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'gpu_check: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "gpu_check: every stage passed"
