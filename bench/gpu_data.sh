#!/usr/bin/env bash
# Make the inputs bench/gpu.sh carries to the GPU machine, which has no internet and should spend
# its minutes on the GPU: the held-out sample videos of `unmask eval-robustness --samples` with the
# substitute and Lipschitz detectors trained here (the run is also the CPU baseline on the same
# crops, ~15 minutes on 2 cores from nothing). The 60 s bench video is made there (carried, it and
# PyAV's wheel would pass the 64 MiB limit).
#
#   bash bench/gpu_data.sh
#   run(command="bash bench/gpu.sh", carry=["bench/wheels", "bench/gpu-data/robustness/test_crops",
#       "bench/gpu-data/robustness/models"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
$PY -m server eval-robustness --samples bench/gpu-data/robustness --out /tmp/unmask-gpu-data-cpu "$@"
# The held-out crops the eval cuts from the videos (every 5th frame), for a machine without Haar cascades.
$PY -c "from server.vision.datasets import export_video_crops as e; from server.robust.evaluate import DEFAULT_EVERY as n
print(e('bench/gpu-data/robustness/test_videos', 'bench/gpu-data/robustness/test_crops', size=(128, 128), every=n))"
du -sh bench/wheels bench/gpu-data/robustness/test_crops bench/gpu-data/robustness/models
