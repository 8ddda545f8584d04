"""8 concurrent checks vs the same 8 one at a time, in one process (target ratio ≥ 1.5 on CPU).

Both arms use the server's own path: one Runtime with the shared inference batcher, each
check a full analyze_video (decode → faces → detector) on its own thread, early verdicts
off so both arms do the same work, torch and OpenCV at the server's default threads per call
(all cores). The same two arms also run with one thread per call (OP_THREADS=1), which is
what a server of many checks might be expected to want; its effect on each arm is printed.
Arms alternate; ratios of medians are printed, with the cores one check at a time keeps busy
(machine-wide, so the decode sandboxes count) and the ceiling that puts on the ratio.

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
from server.vision.threads import set_op_threads


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all processes: the decode sandboxes too)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


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
    settings = {"server default, all cores": os.cpu_count() or 1, "OP_THREADS=1": 1}
    seq: dict[str, list[float]] = {k: [] for k in settings}
    conc: dict[str, list[float]] = {k: [] for k in settings}
    # Cores kept busy, machine-wide: what one check at a time leaves idle is all that running
    # several at once can fill (beyond what batching saves), so cores ÷ this bounds the ratio.
    seq_cores: dict[str, list[float]] = {k: [] for k in settings}
    conc_cpu: dict[str, list[float]] = {k: [] for k in settings}
    seq_cpu: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(args.rounds):
        for name, threads in settings.items():
            set_op_threads(threads)
            t0, c0 = time.perf_counter(), busy_cpu_s()
            frames = sum(one(path, runtime) for _ in range(args.checks))
            seq[name].append(time.perf_counter() - t0)
            seq_cpu[name].append(busy_cpu_s() - c0)
            seq_cores[name].append(seq_cpu[name][-1] / seq[name][-1])
            t0, c0 = time.perf_counter(), busy_cpu_s()
            with ThreadPoolExecutor(args.checks) as pool:
                frames_c = sum(pool.map(lambda _: one(path, runtime), range(args.checks)))
            conc[name].append(time.perf_counter() - t0)
            conc_cpu[name].append(busy_cpu_s() - c0)
            assert frames == frames_c
            print(
                f"  round, {threads} thread(s) per call ({name}): one at a time {seq[name][-1]:.1f} s "
                f"({seq_cpu[name][-1]:.1f} CPU-s, {seq_cores[name][-1]:.2f} cores busy), "
                f"{args.checks} at once {conc[name][-1]:.1f} s ({conc_cpu[name][-1]:.1f} CPU-s) ({frames} frames)"
            )
    med = statistics.median
    for name, threads in settings.items():
        print(
            f"throughput ratio (concurrent ÷ one at a time), {threads} thread(s) per call ({name}) = "
            f"{med(seq[name]) / med(conc[name]):.2f}"
            + (" (target ≥ 1.5)" if name.startswith("server") else "")
        )
    cores = os.cpu_count() or 1
    for name, threads in settings.items():
        busy = med(seq_cores[name])
        print(
            f"one check at a time keeps {busy:.2f} of {cores} cores busy ({threads} thread(s) per call): "
            f"filling the idle cores alone bounds the ratio at {cores / busy:.2f}; CPU-s for the same "
            f"checks, at once ÷ one at a time = {med(conc_cpu[name]) / med(seq_cpu[name]):.2f}"
        )
    print(
        f"time taken with one thread per call ÷ all cores: one at a time "
        f"{med(seq['OP_THREADS=1']) / med(seq['server default, all cores']):.2f}, {args.checks} at once "
        f"{med(conc['OP_THREADS=1']) / med(conc['server default, all cores']):.2f}; "
        f"batcher: {runtime.batcher.crops} crops in {runtime.batcher.batches} batches"
    )
    runtime.close()


if __name__ == "__main__":
    main()
