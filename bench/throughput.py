"""8 concurrent checks vs the same 8 one at a time, in one process (target ratio ≥ 1.5 on CPU).

Both arms use the server's own path: one Runtime with the shared inference batcher, each
check a full analyze_video (decode → faces → detector) on its own thread, early verdicts
off so both arms do the same work. Arms alternate; the ratio of medians is printed.

    python bench/throughput.py [--model-dir models/default] [--checks 8] [--seconds 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.media import bench_video
from server.analysis.run import analyze_video
from server.analysis.runtime import Runtime
from server.media.decode import DecodeLimits


def one(path: Path, runtime: Runtime) -> int:
    return len(analyze_video(path, runtime, rate=2.0, limits=DecodeLimits()).results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--checks", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    path = bench_video(args.seconds, size=(1280, 720))
    runtime = Runtime.load(args.model_dir, device="cpu")
    runtime.enable_batching()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.checks} checks of {path.name}"
    )
    one(path, runtime)  # warm-up: model, cascades, allocator
    seq, conc = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        frames = sum(one(path, runtime) for _ in range(args.checks))
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.checks) as pool:
            frames_c = sum(pool.map(lambda _: one(path, runtime), range(args.checks)))
        conc.append(time.perf_counter() - t0)
        assert frames == frames_c
        print(
            f"  round: one at a time {seq[-1]:.1f} s, {args.checks} at once {conc[-1]:.1f} s ({frames} frames)"
        )
    ratio = statistics.median(seq) / statistics.median(conc)
    print(
        f"throughput ratio (concurrent ÷ one at a time) = {ratio:.2f} (target ≥ 1.5); "
        f"batcher: {runtime.batcher.crops} crops in {runtime.batcher.batches} batches"
    )
    runtime.close()


if __name__ == "__main__":
    main()
