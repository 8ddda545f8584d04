"""Detector forward with batch norm folded into the convolutions vs as trained, same process.

Both arms are the default checkpoint in eval mode, channels_last, under inference_mode, one
torch thread (the server's per-call share on 2 cores); arms alternate for ``--seconds`` each per
round. Prints ms per forward for each batch size (3 = one face with the tamper check's two
copies; 32 = a merged batch), the ratio fused ÷ unfused, and the largest output difference.

    python bench/fusion.py [--model-dir models/default] [--batches 3 32] [--seconds 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.vision.checkpoint import load_checkpoint
from server.vision.fusion import fuse_conv_bn


def ms_per_call(net: torch.nn.Module, x: torch.Tensor, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        net(x)
        n += 1
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--batches", type=int, nargs="+", default=[3, 32])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain, card = load_checkpoint(args.model_dir)
    fused = copy.deepcopy(plain)
    folded = fuse_conv_bn(fused)
    plain, fused = (m.to(memory_format=torch.channels_last).eval() for m in (plain, fused))
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"{card.id} {card.version} ({card.architecture}), {folded} batch norms folded, 1 thread"
    )
    h, w = card.input_size
    with torch.inference_mode():
        for b in args.batches:
            x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(b))
            x = x.contiguous(memory_format=torch.channels_last)
            diff = (plain(x) - fused(x)).abs().max().item()
            times: dict[str, list[float]] = {"unfused": [], "fused": []}
            for _ in range(args.rounds):
                for name, net in (("unfused", plain), ("fused", fused)):
                    times[name].append(ms_per_call(net, x, args.seconds))
            a, f = statistics.median(times["unfused"]), statistics.median(times["fused"])
            print(
                f"batch {b}: unfused {a:.2f} ms, fused {f:.2f} ms, ratio {f / a:.2f}; max |Δ logit| {diff:.1e}"
            )


if __name__ == "__main__":
    main()
