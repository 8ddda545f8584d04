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


def run(cfg: DIPConfig, device: torch.device, crops: torch.Tensor) -> tuple[float, list[int], torch.Tensor]:
    """(seconds, per-crop iterations, outputs) of one purify call."""
    result = Purifier(cfg, device).purify(crops.to(device))
    return result.seconds, result.steps, result.images.cpu()


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="side of the input crops")
    ap.add_argument("--paper-iters", type=int, default=None, help="timed paper iterations (cpu 20, cuda 200)")
    ap.add_argument("--paper-crops", type=int, default=4, help="crops the paper configuration is timed on")
    ap.add_argument("--fast-iters", type=int, default=10, help="CPU: timed fast-default iterations")
    ap.add_argument("--full-fast", action="store_true", help="run the fast default to its rule on CPU too")
    ap.add_argument("--compile", default=None, help="torch.compile mode for the fast default (A/B)")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="fast default dtype")
    ap.add_argument("--group", type=int, default=None, help="fast default crops per launch")
    ap.add_argument("--eps", type=float, default=0.02, help="sign-noise budget (paper FGSM: 0.02)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    k = args.paper_iters or (200 if on_gpu else 20)
    clean, noisy = make_crops(args.crops, args.size, args.eps, args.seed)
    print(f"machine: {machine(device)}")
    print(f"crops: {args.crops} x {args.size}x{args.size}, sign noise eps={args.eps}")

    # Warm-up (lazy kernel and allocator set-up is ~2-3 s on the first call), not timed.
    run(DIPConfig.paper().replace(size=64, fixed_iter=2, max_iters=2), device, noisy[:1])

    rows: list[tuple[str, int, float, float | None, str]] = []
    # The paper fits one crop at a time, so its cost per crop does not depend on the crop: time a few.
    n_paper = min(args.crops, args.paper_crops)
    paper = DIPConfig.paper().replace(fixed_iter=k, max_iters=k)
    seconds, _, _ = run(paper, device, noisy[:n_paper])
    paper_s = seconds / n_paper / k * PAPER_READ_AT
    note = f"extrapolated from {k} its on {n_paper} crop(s)"
    rows.append(("paper (512², fixed 6000)", PAPER_READ_AT, paper_s, None, note))

    fast = DIPConfig.fast()
    fast = fast.replace(
        **{
            key: val
            for key, val in (("compile", args.compile), ("dtype", args.dtype), ("group", args.group))
            if val is not None
        }
    )
    if on_gpu or args.full_fast:
        seconds, steps, out = run(fast, device, noisy)
        rows.append(
            (
                "fast default",
                round(sum(steps) / len(steps)),
                seconds / args.crops,
                psnr(out, clean),
                "full run",
            )
        )
    else:
        short = fast.replace(stop="fixed", fixed_iter=args.fast_iters, max_iters=args.fast_iters, min_iters=0)
        seconds, _, _ = run(short, device, noisy)
        per_crop = seconds / args.crops / args.fast_iters * fast.max_iters
        note = f"extrapolated from {args.fast_iters} its to max_iters (upper bound)"
        rows.append(("fast default", fast.max_iters, per_crop, None, note))

    seconds, steps, out = run(DIPConfig.cpu(), device, noisy)
    rows.append(
        (
            "cpu preset (64², 300 its)",
            round(sum(steps) / len(steps)),
            seconds / args.crops,
            psnr(out, clean),
            "full run",
        )
    )
    ceiling = psnr(resize(resize(clean, (64, 64)), (args.size, args.size)), clean)

    header = f"{'config':<28}{'device':<8}{'crops':>6}{'iters':>7}{'s/crop':>10}{'x paper':>9}{'PSNR dB':>9}"
    print(f"\n{header}  note")
    for name, iters, per_crop, quality, note in rows:
        q = "-" if quality is None else f"{quality:.2f}"
        print(
            f"{name:<28}{device.type:<8}{args.crops:>6}{iters:>7}{per_crop:>10.2f}"
            f"{paper_s / per_crop:>9.1f}{q:>9}  {note}"
        )
    noisy_db = psnr(noisy, clean)
    print(f"PSNR against the clean crop: noisy input {noisy_db:.2f} dB, clean via 64² {ceiling:.2f} dB")


if __name__ == "__main__":
    main()
