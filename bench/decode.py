"""Sampled decoding: ``open_video(path).samples(rate)`` against the ffmpeg CLI doing the same.

    python bench/decode.py [--seconds 60] [--rate 2] [--rounds 3] [--gops default,50] [--input F]

Inputs: 1280x720 25 fps H.264 (x264 preset medium, so B-frames as in real web video) of a
scrolling texture with camera-like noise, one file per GOP setting, cached under /tmp. For each
input the three contenders run alternately, ``--rounds`` times, in this process:

* ``unmask``: our sampler (drops unneeded GOPs, skips non-reference frames, converts only
  emitted frames);
* ``ffmpeg``: ``ffmpeg -v error -i F -vf fps=RATE -f rawvideo -pix_fmt rgb24 -`` into a pipe
  (bytes counted, not kept);
* ``pyav-full``: the naive PyAV loop (decode every frame, convert only the sampled ones).

Prints median wall and CPU seconds (CPU: all threads, user+system; steadier than wall time on a
shared machine), frames out, frames decoded and the ratios unmask ÷ ffmpeg (target ≤ 1.0).
The ffmpeg binary is only needed here: ``apt-get install -y ffmpeg``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.media.decode import open_video
from server.media.encode import write_video

CACHE = Path(os.environ.get("UNMASK_BENCH_CACHE", "/tmp/unmask-bench"))
SIZE = (1280, 720)
FPS = 25


def textured_frames(n: int, width: int, height: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Scrolling blurred-noise texture, a moving box and a little per-frame noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, ((height + 512) // 4, (width + 1024) // 4, 3)).astype(np.float32)
    tex = np.repeat(np.repeat(small, 4, 0), 4, 1)
    for axis in (0, 1):  # box blur: detail the encoder must spend bits on, but not pure noise
        tex = (tex + np.roll(tex, 1, axis) + np.roll(tex, 2, axis) + np.roll(tex, 3, axis)) / 4
    tex = tex.astype(np.int16)
    noise = [rng.integers(-4, 5, (height, width, 3), dtype=np.int16) for _ in range(7)]
    for i in range(n):
        dx, dy = (2 * i) % 1024, (i // 3) % 512
        frame = tex[dy : dy + height, dx : dx + width] + noise[i % 7]
        cx = width // 2 + int(width / 3 * math.sin(i / 20))
        cy = height // 2 + int(height / 3 * math.cos(i / 30))
        frame[max(cy - 60, 0) : cy + 60, max(cx - 60, 0) : cx + 60] = (200, 100, 50)
        yield frame.clip(0, 255).astype(np.uint8)


def bench_input(seconds: int, gop: str) -> Path:
    """The cached benchmark video for ``seconds`` and ``gop`` ("default" = x264's own)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"textured_{seconds}s_{SIZE[0]}x{SIZE[1]}_gop{gop}_medium.mp4"
    if not path.exists():
        print(f"encoding {path.name} (once) ...", flush=True)
        tmp = path.with_suffix(".tmp.mp4")
        frames = textured_frames(seconds * FPS, *SIZE)
        write_video(frames, tmp, fps=FPS, preset="medium", gop=None if gop == "default" else int(gop))
        tmp.rename(path)
    return path


def run_unmask(path: Path, rate: float) -> tuple[int, int]:
    """Our sampler; returns (frames out, frames decoded)."""
    with open_video(path) as reader:
        frames = sum(1 for _ in reader.samples(rate))
        return frames, reader.decoded_frames


def run_ffmpeg(path: Path, rate: float) -> tuple[int, int | None]:
    """The ffmpeg CLI's fps filter to raw RGB on a pipe; returns (frames out, None)."""
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"fps={rate:g}"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        total = 0
        while chunk := proc.stdout.read(1 << 20):
            total += len(chunk)
    if proc.returncode:
        raise RuntimeError(f"ffmpeg failed with {proc.returncode}")
    with av.open(str(path)) as c:
        w, h = c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height
    return total // (w * h * 3), None


def run_pyav_full(path: Path, rate: float) -> tuple[int, int]:
    """Decode every frame, convert the first at or after each 1/rate; returns (out, decoded)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        start, tb = stream.start_time or 0, stream.time_base
        out = decoded = next_slot = 0
        for frame in c.decode(stream):
            decoded += 1
            slot = math.floor(float((frame.pts - start) * tb) * rate + 1e-6)
            if slot >= next_slot:
                frame.to_ndarray(format="rgb24")
                out, next_slot = out + 1, slot + 1
    return out, decoded


CONTENDERS = {"unmask": run_unmask, "ffmpeg": run_ffmpeg, "pyav-full": run_pyav_full}


def cpu_seconds() -> float:
    """User+system CPU time of this process (all threads) and its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench(path: Path, rate: float, rounds: int) -> dict[str, tuple[float, float, int, int | None]]:
    """Alternate the contenders ``rounds`` times; name -> (median wall s, median CPU s, frames, decoded)."""
    wall: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    cpu: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    counts: dict[str, tuple[int, int | None]] = {}
    for _ in range(rounds):
        for name, fn in CONTENDERS.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            counts[name] = fn(path, rate)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
    return {
        name: (statistics.median(wall[name]), statistics.median(cpu[name]), *counts[name])
        for name in CONTENDERS
    }


def main() -> int:
    """Parse arguments, build the inputs, print one table per input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gops", default="default,50", help="comma-separated: default and/or numbers")
    parser.add_argument("--input", type=Path, action="append", help="also time this video file")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("the ffmpeg CLI is the baseline and is not installed: apt-get install -y ffmpeg")
        return 2
    inputs = [bench_input(args.seconds, gop) for gop in args.gops.split(",") if gop]
    inputs += args.input or []
    print(f"PyAV {av.__version__} (libavcodec {av.library_versions['libavcodec']}), {os.cpu_count()} CPUs")
    print(f"rate {args.rate:g}/s, median of {args.rounds} alternating rounds\n")
    for path in inputs:
        result = bench(path, args.rate, args.rounds)
        print(f"{path.name}  ({path.stat().st_size / 1e6:.1f} MB)")
        print(f"  {'contender':<10} {'wall s':>7} {'CPU s':>7} {'frames':>7} {'decoded':>8}")
        for name, (secs, cpu, frames, decoded) in result.items():
            shown = decoded if decoded is not None else "-"
            print(f"  {name:<10} {secs:>7.2f} {cpu:>7.2f} {frames:>7} {shown:>8}")
        ratio = result["unmask"][0] / result["ffmpeg"][0]
        cpu_ratio = result["unmask"][1] / result["ffmpeg"][1]
        print(f"  unmask / ffmpeg = {ratio:.2f} wall, {cpu_ratio:.2f} CPU  (target <= 1.0)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
