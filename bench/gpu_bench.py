"""GPU benchmarks in one table: detector crops/s, time to verdict, DIP seconds per crop, and the
DIP defence's accuracy (``unmask eval-robustness`` with the fast preset fitted on the GPU).

Run through bench/gpu.sh on the GPU machine (≤ 8 minutes); on a CPU-only machine
``--quick`` runs the same code paths with tiny sizes as a smoke check. Each stage runs on its
own: one that fails prints why and the rest still run; a stage that would not finish before
``--budget`` seconds is skipped and says so.

    python bench/gpu_bench.py [--device auto|cuda|cpu] [--quick] [--model-dir models/default]
        [--robustness-data bench/gpu-data/robustness] [--out DIR] [--budget 470]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from server.vision.card import default_card
from server.vision.detector import Detector, resolve_device
from server.vision.registry import arch_defaults, create_model

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("detector", "ttv", "robustness", "dip")
Row = tuple[str, str, str]


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


def time_to_verdict(model_dir: Path, seconds: int, device: str) -> tuple[float, float, int]:
    """(early-verdict seconds, full-read seconds, frames) of `analyze_video` on the bench video."""
    from bench.media import bench_video
    from server.analysis.run import analyze_video
    from server.analysis.runtime import Runtime
    from server.analysis.sequential import SequentialTest
    from server.media.decode import DecodeLimits

    path = bench_video(seconds)
    runtime = Runtime.load(model_dir, device=device)
    analyze_video(path, runtime, rate=2.0, limits=DecodeLimits())  # warm-up
    t0 = time.perf_counter()
    out = analyze_video(
        path, runtime, rate=2.0, limits=DecodeLimits(), early=SequentialTest(runtime.detector.card.threshold)
    )
    early = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyze_video(path, runtime, rate=2.0, limits=DecodeLimits())
    return early, time.perf_counter() - t0, len(out.results)


def run_script(argv: list[str], timeout: float) -> str:
    """Run a Python script of this repo and return its stdout; its stderr (progress) goes to ours."""
    out = subprocess.run(
        [sys.executable, *argv], stdout=subprocess.PIPE, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    if out.returncode:
        raise RuntimeError(f"exit {out.returncode} (its stderr is above): {out.stdout[-1000:]}")
    return out.stdout


def held_out(data: Path) -> Path:
    """The held-out crops bench/gpu_data.sh exported (what the eval cuts from the videos, pixel for
    pixel: the GPU machine's OpenCV 5 has no Haar cascades to cut them), else the videos."""
    return data / "test_crops" if (data / "test_crops").is_dir() else data / "test_videos"


def robustness_args(data: Path, out: Path, device: torch.device, quick: bool) -> list[str]:
    """`unmask eval-robustness` on prepared sample data with the DIP fits on ``device``."""
    models = sorted((data / "models").glob("*/substitute"))
    argv = ["-m", "server", "eval-robustness", "--data", str(held_out(data)), "--out", str(out)]
    if models:  # trained here beforehand (bench/gpu_data.sh): no training on the GPU machine
        argv += ["--substitute", str(models[-1]), "--lipschitz", str(models[-1].with_name("lipschitz"))]
    else:
        argv += ["--train-data", str(data / "train_crops")]
    preset = "fast" if device.type == "cuda" else "cpu"
    argv += [
        "--purifier",
        preset,
        "--purifier-device",
        str(device),
        "--threads",
        str(min(12, os.cpu_count() or 1)),
    ]
    return [*argv, "--quick"] if quick else argv


def robustness_rows(report: dict) -> list[Row]:
    """The purification rows of an eval-robustness report (JSON)."""
    p = report.get("purification", {})
    if "restore_rate" not in p:
        return [("DIP restore / retain", f"not measured: {p.get('skipped', report.get('tamper'))}", "")]
    card = p["card_threshold"]
    curve = " ".join(
        f"{c['iteration']}:{c['restore_rate']:.2f}/{c['retain_rate']:.2f}/{c['retain_real']:.2f}"
        for c in p.get("curve", [])
    )
    return [
        (
            f"DIP restore ({p['preset']} on {p['device']})",
            f"{p['restore_rate']:.1%} of {p['n_fooled']} fooled fakes (target ≥ 95%)",
            f"threshold {p['threshold']:.4f} from {p['threshold_source']}; by attack {p['restore_by_attack']}",
        ),
        (
            "DIP restore, turned by the attack",
            f"{p['restored_turned']}/{p['n_turned']} of the fooled fakes the detector had right unperturbed",
            "the rest it misses clean: no purification turns those",
        ),
        (
            "DIP retain (other crops right)",
            f"{p['retain_rate']:.1%} of {p['n_other']}: reals {p['retain_real']:.1%}, fakes "
            f"{p['retain_fake']:.1%} (target ≥ 98%)",
            f"card threshold: restore {card['restore_rate']:.1%}, retain {card['retain_rate']:.1%}",
        ),
        (
            "DIP in eval-robustness",
            f"{p['seconds_per_crop']} s/crop, median {p['iterations']} iterations",
            f"curve it:restore/retain/reals {curve}",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke run of every path")
    ap.add_argument("--model-dir", type=Path, default=Path("models/default"))
    ap.add_argument("--robustness-data", type=Path, default=Path("bench/gpu-data/robustness"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/unmask-gpu-bench")))
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for all stages together")
    ap.add_argument(
        "--stages", default=",".join(STAGES), help=f"a comma-separated subset of {','.join(STAGES)}"
    )
    args = ap.parse_args()
    started = time.perf_counter()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {name} · torch {torch.__version__} · {os.cpu_count()} cores",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    wanted = set(args.stages.split(","))

    def stage(key: str, title: str, needs: float, body: Callable[[], list[Row]]) -> None:
        if key not in wanted:
            return
        if left() < needs:
            rows.append((title, f"skipped: {left():.0f} s left of the budget, it needs ~{needs:.0f}", ""))
            return
        t0 = time.perf_counter()
        try:
            got = body()
        except Exception as exc:  # one failed stage must not cost the others
            traceback.print_exc()
            got = [(title, f"FAILED: {type(exc).__name__}: {str(exc)[-300:]}", "")]
        print(f"[{title}: {time.perf_counter() - t0:.1f} s]", flush=True)
        rows.extend(got)

    batch, secs = (8, 1.0) if args.quick else (256, 5.0)
    for arch in ("efficientnet_b0", "unmask_tiny"):

        def throughput(arch: str = arch) -> list[Row]:
            rate = detector_throughput(arch, device, batch, secs)
            target = " (target ≥ 5000)" if arch == "efficientnet_b0" else ""
            size = arch_defaults(arch).input_size[0]
            return [(f"detector {arch} @{size}", f"{rate:,.0f} crops/s{target}", f"batch {batch}")]

        stage("detector", f"detector {arch}", 15, throughput)

    if args.model_dir.exists():
        seconds = 10 if args.quick else 60

        def ttv() -> list[Row]:
            early, full, frames = time_to_verdict(args.model_dir, seconds, str(device))
            return [
                (
                    f"time to verdict, {seconds} s 720p",
                    f"{early:.2f} s (target ≤ 1.5); full read {full:.2f} s",
                    f"{frames} frames with the early verdict on",
                )
            ]

        stage("ttv", "time to verdict", 30, ttv)

    if held_out(args.robustness_data).is_dir():
        out = args.out / "robustness"

        def robustness() -> list[Row]:
            argv = robustness_args(args.robustness_data, out, device, args.quick)
            print("$ python " + " ".join(argv), flush=True)
            run_script(argv, timeout=max(left(), 1))
            report = json.loads((out / "eval_robustness.json").read_text())
            print(f"eval-robustness stages (s): {report.get('seconds')}", flush=True)
            return robustness_rows(report)

        stage("robustness", "DIP accuracy", 90, robustness)
    elif "robustness" in wanted:
        rows.append(("DIP accuracy", f"skipped: no held-out data in {args.robustness_data}", ""))

    dip_args = ["--device", "cuda" if device.type == "cuda" else "cpu"]
    dip_args += (
        ["--crops", "4", "--size", "64", "--paper-iters", "2", "--paper-crops", "1", "--fast-iters", "2"]
        if args.quick
        else ["--crops", "64", "--size", "256", "--full-fast"]
    )

    def dip() -> list[Row]:
        print(
            run_script([str(Path(__file__).with_name("dip.py")), *dip_args], timeout=max(left(), 1)),
            flush=True,
        )
        return [("DIP per crop", "see the table above (bench/dip.py)", " ".join(dip_args))]

    stage("dip", "DIP per crop", 60, dip)

    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{a.ljust(width)}  {b}  [{c}]" for a, b, c in rows)
    print(f"\n{table}\n(total {time.perf_counter() - started:.0f} s)")
    (args.out / "gpu_table.txt").write_text(table + "\n")


if __name__ == "__main__":
    main()
