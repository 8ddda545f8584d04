"""A bounded atheris run over the upload/frame parsers (skipped where atheris is not installed)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("atheris", reason="atheris is not installed (pip install -c constraints.txt atheris)")

HARNESS = Path(__file__).with_name("atheris_harness.py")

# Bounded for CI: whichever comes first.
RUNS, MAX_SECONDS = 2000, 30


def _seeds(directory: Path) -> None:
    """One valid input per target, so mutation starts from real structure."""
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(jpeg, format="JPEG")
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    form = (
        b'--fuzzboundary\r\nContent-Disposition: form-data; name="frame"; filename="f.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + jpeg.getvalue() + b"\r\n"
        b'--fuzzboundary\r\nContent-Disposition: form-data; name="t"\r\n\r\n1.5\r\n'
        b'--fuzzboundary\r\nContent-Disposition: form-data; name="final"\r\n\r\n1\r\n--fuzzboundary--\r\n'
    )
    seeds = {
        "sniff_mp4": b"\0" + b"\0\0\0\x18ftypisom\0\0\0\0isomiso2\0\0\0\x08moov",
        "sniff_mkv": b"\0" + b"\x1a\x45\xdf\xa3\x84\x42\x82\x84webm",
        "form": b"\1" + form,
        "jpeg": b"\2" + jpeg.getvalue(),
        "png": b"\2" + png.getvalue(),
    }
    for name, data in seeds.items():
        (directory / name).write_bytes(data)


def test_atheris_finds_no_crash(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    _seeds(seeds)
    env = {**os.environ, "PYTHONPATH": str(HARNESS.parents[2])}
    proc = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-runs={RUNS}",
            "-seed=1",  # the same inputs on every CI run
            f"-max_total_time={MAX_SECONDS}",
            "-rss_limit_mb=4096",  # the harness imports the server (torch): ~0.6-2.5 GB at rest
            str(seeds),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS + 60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done" in proc.stderr or "DONE" in proc.stderr, proc.stderr[-2000:]
