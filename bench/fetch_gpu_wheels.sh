#!/usr/bin/env bash
# Download the wheels bench/gpu.sh needs on the GPU machine (Python 3.12, x86_64, no internet there).
# Only what its benchmarks import and the machine lacks (torch, numpy, opencv, timm, scikit-image,
# safetensors and typing-extensions are there): the carried tree is limited to 64 MiB.
#
# --opencv: instead, OpenCV 4 into bench/wheels-cv/ (62 MB). The GPU machine's OpenCV 5 has no Haar
# cascades, which the time-to-verdict row needs, and OpenCV 4 with PyAV passes the 64 MiB one call
# carries: install it in one call, then run gpu.sh in the next before the machine goes back
# (it stays warm 30 s):
#   run(command="python3 -m pip install -q --no-index --no-deps bench/wheels-cv/*.whl", carry=["bench/wheels-cv"])
#   run(command="bash bench/gpu.sh --stages ttv", carry=["bench/wheels"])
set -euo pipefail
cd "$(dirname "$0")"
dir=wheels specs=('av>=14,<19' 'sqlalchemy>=2.0.30,<2.2' 'greenlet>=3,<4')
[ "${1:-}" = --opencv ] && dir=wheels-cv specs=('opencv-python-headless>=4.9,<5')
rm -rf "$dir" && mkdir -p "$dir"
pip download -q --no-deps -d "$dir" --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 "${specs[@]}"
ls "$dir"
