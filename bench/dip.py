"""DIP purification cost: the paper's configuration against the fast default and the CPU preset.

    python bench/dip.py [--device cpu|cuda] [--crops N] [--size 256] [--paper-iters K]

The same N face crops (skimage's astronaut, jittered, plus FGSM-like ±ε sign noise) go through
(a) the paper's configuration for K iterations per crop (on the first ``--paper-crops``: it fits
one crop at a time, so its cost per crop is the same for all), extrapolated to its 6,000 and
labelled so, (b) the fast default to its stopping rule (on CPU: K iterations extrapolated to its
``max_iters``, an upper bound, unless ``--full-fast``), (c) the CPU preset in full. One table:
seconds per crop and the ratio to the paper, plus PSNR of each output against the clean crop.
On the GPU, amortisation needs many crops: ``--device cuda --crops 64`` (A/B: ``--compile
reduce-overhead``, ``--dtype float32``, ``--group 16``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.robust.dip import DIPConfig, Purifier
from server.robust.dip_fit import psnr
from server.robust.dip_prefilter import resize

PAPER_READ_AT = 6000  # the paper classifies the output at iteration 6,000


def make_crops(n: int, size: int, eps: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, perturbed) (n, 3, size, size): jittered astronaut faces and ±eps sign noise in 2-px blobs."""
    gen = torch.Generator().manual_seed(seed)
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    crops = []
    for _ in range(n):
        dy, dx = (int(v) for v in torch.randint(-12, 13, (2,), generator=gen))
        face = img[:, 20 + 12 + dy : 300 + 12 + dy, 120 + 12 + dx : 360 + 12 + dx]
        crops.append(resize(face.unsqueeze(0), (size, size))[0])
    clean = torch.stack(crops).clamp(0, 1)
    # Gradient-sign perturbations of CNNs are spatially correlated: sign of slightly blurred noise.
    noise = F.avg_pool2d(torch.randn(clean.shape, generator=gen), 3, stride=1, padding=1)
    return clean, (clean + eps * noise.sign()).clamp(0, 1)


def machine(device: torch.device) -> str:
    """CPU model, threads, torch version, GPU name, date."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"{model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}{gpu}, {datetime.datetime.now().isoformat(timespec='seconds')}"
    )


def run(
    cfg: DIPConfig, device: torch.device, crops: torch.Tensor
) -> tuple[float, float, list[int], torch.Tensor]:
    """(wall seconds, CPU seconds of this process, per-crop iterations, outputs) of one purify call."""
    cpu0 = time.process_time()
    result = Purifier(cfg, device).purify(crops.to(device))
    return result.seconds, time.process_time() - cpu0, result.steps, result.images.cpu()


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="side of the input crops")
    ap.add_argument("--paper-iters", type=int, default=None, help="timed paper iterations (cpu 10, cuda 200)")
    ap.add_argument("--paper-crops", type=int, default=1, help="crops the paper configuration is timed on")
    ap.add_argument("--fast-iters", type=int, default=5, help="CPU: timed fast-default iterations")
    ap.add_argument("--full-fast", action="store_true", help="run the fast default to its rule on CPU too")
    ap.add_argument("--compile", default=None, help="torch.compile mode for the fast default (A/B)")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="fast default dtype")
    ap.add_argument("--group", type=int, default=None, help="fast default crops per launch")
    ap.add_argument("--eps", type=float, default=0.02, help="sign-noise budget (paper FGSM: 0.02)")
    ap.add_argument("--threads", type=int, default=1, help="1: robust on a shared CPU")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    k = args.paper_iters or (200 if on_gpu else 10)
    clean, noisy = make_crops(args.crops, args.size, args.eps, args.seed)
    print(f"machine: {machine(device)}, load average {os.getloadavg()[0]:.1f}")
    ceiling = psnr(resize(resize(clean, (64, 64)), (args.size, args.size)), clean)
    print(
        f"crops: {args.crops} x {args.size}x{args.size}, sign noise eps={args.eps}; PSNR to the clean crop: "
        f"noisy {psnr(noisy, clean):.2f} dB, clean resized via 64² {ceiling:.2f} dB"
    )
    # Warm-up (lazy kernel and allocator set-up is ~2-3 s on the first call), not timed.
    run(DIPConfig.paper().replace(size=64, fixed_iter=2, max_iters=2), device, noisy[:1])
    header = f"{'config':<28}{'device':<8}{'crops':>6}{'iters':>7}{'s/crop':>10}{'x paper':>9}{'cpu-s/crop':>11}{'PSNR dB':>9}"
    print(f"\n{header}  note", flush=True)

    def row(
        name: str, crops: int, iters: int, per_crop: float, cpu: float, quality: float | None, note: str
    ) -> None:
        q = "-" if quality is None else f"{quality:.2f}"
        print(
            f"{name:<28}{device.type:<8}{crops:>6}{iters:>7}{per_crop:>10.2f}{paper_s / per_crop:>9.1f}"
            f"{cpu:>11.2f}{q:>9}  {note}",
            flush=True,
        )

    # The paper fits one crop at a time, so its cost per crop does not depend on the crop: time a few.
    n_paper = min(args.crops, args.paper_crops)
    seconds, cpu, _, _ = run(DIPConfig.paper().replace(fixed_iter=k, max_iters=k), device, noisy[:n_paper])
    paper_s, scale = seconds / n_paper / k * PAPER_READ_AT, PAPER_READ_AT / n_paper / k
    row(
        "paper (512², fixed 6000)",
        n_paper,
        PAPER_READ_AT,
        paper_s,
        cpu * scale,
        None,
        f"extrapolated from {k} its",
    )

    overrides = (("compile", args.compile), ("dtype", args.dtype), ("group", args.group))
    fast = DIPConfig.fast().replace(**{key: val for key, val in overrides if val is not None})
    if on_gpu or args.full_fast:
        seconds, cpu, steps, out = run(fast, device, noisy)
        mean_steps = round(sum(steps) / len(steps))
        row(
            "fast default",
            args.crops,
            mean_steps,
            seconds / args.crops,
            cpu / args.crops,
            psnr(out, clean),
            "full run",
        )
    else:
        n = args.fast_iters
        seconds, cpu, _, _ = run(
            fast.replace(stop="fixed", fixed_iter=n, max_iters=n, min_iters=0), device, noisy
        )
        scale = fast.max_iters / args.crops / n
        note = f"extrapolated from {n} its (bound)"
        row("fast default", args.crops, fast.max_iters, seconds * scale, cpu * scale, None, note)

    seconds, cpu, steps, out = run(DIPConfig.cpu(), device, noisy)
    n, mean_steps = args.crops, round(sum(steps) / len(steps))
    row("cpu preset (64², 300 its)", n, mean_steps, seconds / n, cpu / n, psnr(out, clean), "full run")
    print("cpu-s/crop: CPU time of this process, all threads (on a shared CPU, wall time when it runs alone)")


if __name__ == "__main__":
    main()
