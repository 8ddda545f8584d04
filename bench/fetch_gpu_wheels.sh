#!/usr/bin/env bash
# Download the wheels bench/gpu.sh needs on the GPU machine (Python 3.12, x86_64, no internet there).
# Only what its benchmarks import and the machine lacks (torch, numpy, opencv, timm, scikit-image,
# safetensors and typing-extensions are there): the carried tree is limited to 64 MiB.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf wheels && mkdir -p wheels
pip download -q --no-deps -d wheels --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 'av>=14,<19' 'sqlalchemy>=2.0.30,<2.2' 'greenlet>=3,<4'
ls wheels
