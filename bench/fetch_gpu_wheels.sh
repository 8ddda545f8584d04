#!/usr/bin/env bash
# Download the wheels bench/gpu.sh needs on the GPU machine (Python 3.12, x86_64, no internet there).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
pip download -q -d wheels --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  'av>=14,<19' 'safetensors>=0.4,<1' 'sqlalchemy>=2.0.30,<2.2' 'alembic>=1.13,<2' 'celery>=5.4,<6' 'aiosqlite>=0.20,<1'
ls wheels | wc -l
