"""`unmask check` on a 60 s and a 10 min 1280x720 H.264 video: time and peak memory.

Each run is a fresh `unmask check` subprocess; peak RSS comes from wait4's rusage. Prints the
10-minute ÷ 60-second peak-memory ratio (target ≤ 1.1: decoding streams, memory is flat).

    python bench/check_memory.py [--model-dir models/default] [--long-seconds 600]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.media import bench_video


def run_check_rusage(path: Path, model_dir: Path) -> dict:
    """Like run_check, measuring the child's peak RSS (ru_maxrss, KiB on Linux)."""
    cmd = [sys.executable, "-m", "server", "check", str(path), "--json", "--model-dir", str(model_dir)]
    start = time.perf_counter()
    pid = os.posix_spawn(
        cmd[0],
        cmd,
        os.environ,
        file_actions=[
            (
                os.POSIX_SPAWN_OPEN,
                1,
                "/tmp/unmask-bench-out.json",
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                0o644,
            ),
            (
                os.POSIX_SPAWN_OPEN,
                2,
                "/tmp/unmask-bench-err.txt",
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                0o644,
            ),
        ],
    )
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("check failed: " + Path("/tmp/unmask-bench-err.txt").read_text()[-2000:])
    verdict = json.loads(Path("/tmp/unmask-bench-out.json").read_text())
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--short-seconds", type=int, default=60)
    parser.add_argument("--long-seconds", type=int, default=600)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  model: {args.model_dir}")
    rows = []
    for seconds in (args.short_seconds, args.long_seconds):
        t0 = time.perf_counter()
        path = bench_video(seconds)
        print(
            f"input {path.name}: {path.stat().st_size / 1e6:.1f} MB (ready in {time.perf_counter() - t0:.0f} s)"
        )
        r = run_check_rusage(path, args.model_dir)
        v = r["verdict"]
        rows.append((seconds, r))
        print(
            f"  {seconds:>5d} s video: wall {r['wall_s']:.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"frames {v['frames_analyzed']}, label {v['label']}, "
            f"timings decode {v['timings']['decode']:.2f} s detect {v['timings']['detect']:.2f} s"
        )
    ratio = rows[1][1]["peak_rss_mib"] / rows[0][1]["peak_rss_mib"]
    print(f"peak memory {args.long_seconds} s ÷ {args.short_seconds} s = {ratio:.3f} (target ≤ 1.10)")


if __name__ == "__main__":
    main()
