#!/usr/bin/env bash
# The one prepared GPU check: installs what the GPU machine lacks from carried wheels, runs the
# GPU benchmarks, prints one table. Budget: ≤ 8 minutes (device time is scarce).
#
#   On this machine, first:  bench/fetch_gpu_wheels.sh      (cp312 wheels into bench/wheels/)
#                            bench/gpu_data.sh              (sample videos, trained substitutes, bench video)
#   Device run:              run(command="bash bench/gpu.sh", carry=["bench/wheels",
#                                "bench/gpu-data/robustness/test_crops", "bench/gpu-data/robustness/models"])
#   (the 60 s bench video is made there: with PyAV's wheel it would pass the 64 MiB carry limit)
#   CPU smoke run:           bash bench/gpu.sh --quick --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ls bench/wheels/*.whl >/dev/null 2>&1; then
  # PyAV, SQLAlchemy and greenlet are not on the GPU machine (bench/fetch_gpu_wheels.sh).
  $PY -m pip install -q --no-index --no-deps bench/wheels/*.whl 2>&1 | tail -2 ||
    echo "gpu.sh: some wheels did not install; affected rows will say so"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d bench/gpu-data/media ] && export UNMASK_BENCH_CACHE="$PWD/bench/gpu-data/media"
OUT=${OUT:-/tmp/unmask-gpu-bench}
mkdir -p "$OUT"
$PY -c "import cv2; cv2.CascadeClassifier" 2>/dev/null ||
  echo "gpu.sh: this OpenCV has no Haar cascades (5.x): the time-to-verdict row needs OpenCV 4 (bench/fetch_gpu_wheels.sh --opencv)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: CPU run"
timeout 480 $PY bench/gpu_bench.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu.log"
