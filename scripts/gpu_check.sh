#!/usr/bin/env bash
# The GPU checks of issue 13, in one run (about 3-5 minutes on an H100/H200; needs CUDA):
#   1. the suite's GPU tests (`-m gpu`): sync-free and graph-replayed steps equal the
#      synchronising one; steps between resizes run under torch.cuda.set_sync_debug_mode("error")
#      and read no tensor into Python; the benchmark runs at tiny sizes;
#   2. the sync-free/graph tests' CPU half, as a control;
#   3. the benchmark at the issue's sizes (paper CNN, Table I widths, batch 128, 300 steps).
# Usage: scripts/gpu_check.sh [OUTDIR]   (results: OUTDIR/gpu_tests.txt, OUTDIR/gpu_bench.md)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name())" \
    || { echo "gpu_check: CUDA is not available"; exit 2; }
status=0
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m gpu -rs \
    tests/test_sync_free.py tests/test_step_engines.py 2>&1 | tee "$OUT/gpu_tests.txt" || status=1
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m "not gpu" tests/test_sync_free.py tests/test_step_engines.py \
    2>&1 | tail -3 | tee -a "$OUT/gpu_tests.txt" || status=1
timeout 240 "$PY" -m benchmarks.gpu --steps 300 --batch 128 2>&1 | tee "$OUT/gpu_bench.md" || status=1
echo "gpu_check: exit $status"
exit $status
