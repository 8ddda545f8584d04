"""GPU benchmarks in one table: detector crops/s, time to verdict, DIP seconds per crop.

Run through bench/gpu.sh on the GPU machine (≤ 8 minutes); on a CPU-only machine
``--quick`` runs the same code paths with tiny sizes as a smoke check.

    python bench/gpu_bench.py [--device auto|cuda|cpu] [--quick] [--model-dir models/default]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from server.vision.card import default_card
from server.vision.detector import Detector, resolve_device
from server.vision.registry import arch_defaults, create_model


def detector_throughput(arch: str, device: torch.device, batch: int, seconds: float) -> float:
    """Crops/s of the full Detector.logits path (preprocessing included) at the arch's input size."""
    torch.manual_seed(0)
    det = Detector(create_model(arch), default_card(arch), device)
    h, w = arch_defaults(arch).input_size
    crops = [torch.randint(0, 255, (h, w, 3), dtype=torch.uint8).numpy() for _ in range(batch)]
    for _ in range(3):
        det.logits(crops)
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        det.logits(crops)
        n += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def time_to_verdict(model_dir: Path, seconds: int, device: str) -> tuple[float, int] | None:
    """`analyze_video` on the bench video (needs PyAV; None when it is missing)."""
    try:
        from bench.media import bench_video
        from server.analysis.run import analyze_video
        from server.analysis.runtime import Runtime
        from server.analysis.sequential import SequentialTest
        from server.media.decode import DecodeLimits
    except ImportError as exc:
        print(f"  (time to verdict skipped: {exc})")
        return None
    path = bench_video(seconds)
    runtime = Runtime.load(model_dir, device=device)
    analyze_video(path, runtime, rate=2.0, limits=DecodeLimits())  # warm-up
    t0 = time.perf_counter()
    out = analyze_video(
        path, runtime, rate=2.0, limits=DecodeLimits(), early=SequentialTest(runtime.detector.card.threshold)
    )
    return time.perf_counter() - t0, len(out.results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke run of every path")
    ap.add_argument("--model-dir", type=Path, default=Path("models/default"))
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {name} · torch {torch.__version__} · {os.cpu_count()} cores"
    )
    rows: list[tuple[str, str, str]] = []
    batch, secs = (8, 1.0) if args.quick else (256, 5.0)
    for arch in ("efficientnet_b0", "unmask_tiny"):
        rate = detector_throughput(arch, device, batch, secs)
        target = " (target ≥ 5000)" if arch == "efficientnet_b0" else ""
        rows.append(
            (
                f"detector {arch} @{arch_defaults(arch).input_size[0]}",
                f"{rate:,.0f} crops/s{target}",
                f"batch {batch}",
            )
        )
    if args.model_dir.exists():
        ttv = time_to_verdict(args.model_dir, 10 if args.quick else 60, str(device))
        if ttv is not None:
            rows.append(
                (
                    "time to verdict, 60 s 720p" if not args.quick else "time to verdict, 10 s 720p",
                    f"{ttv[0]:.2f} s (target ≤ 1.5)",
                    f"{ttv[1]} frames, early verdict on",
                )
            )
    dip_args = ["--device", "cuda" if device.type == "cuda" else "cpu"]
    dip_args += (
        ["--crops", "4", "--size", "64", "--paper-iters", "2", "--paper-crops", "1", "--fast-iters", "2"]
        if args.quick
        else ["--crops", "64", "--size", "256", "--full-fast"]
    )
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("dip.py")), *dip_args],
        capture_output=True,
        text=True,
        timeout=420,
    )
    print(out.stdout[-4000:] or out.stderr[-2000:])
    rows.append(("DIP per crop", "see the table above (bench/dip.py)", " ".join(dip_args)))
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{a.ljust(width)}  {b}  [{c}]" for a, b, c in rows))


if __name__ == "__main__":
    main()
