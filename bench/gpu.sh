#!/usr/bin/env bash
# The one prepared GPU check: installs what the GPU machine lacks from carried wheels, runs the
# GPU benchmarks, prints one table. Budget: ≤ 8 minutes (device time is scarce).
#
#   On this machine, first:  bench/fetch_gpu_wheels.sh      (cp312 wheels into bench/wheels/)
#   Device run:              run(command="bash bench/gpu.sh", carry=["bench/wheels"])
#   CPU smoke run:           bash bench/gpu.sh --quick --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d bench/wheels ] && ls bench/wheels/*.whl >/dev/null 2>&1; then
  # torch, aiohttp, opencv, timm, scikit-image are on the GPU machine; PyAV and the rest are not.
  $PY -m pip install -q --no-index --find-links bench/wheels av safetensors sqlalchemy alembic celery \
    aiosqlite 2>&1 | tail -2 || echo "gpu.sh: some wheels did not install; affected rows will say so"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: CPU run"
timeout 480 $PY bench/gpu_bench.py "$@"
