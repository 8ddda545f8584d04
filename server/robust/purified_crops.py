"""Training crops after Deep Image Prior: what a detector sees once a worker has purified a frame.

Three groups of training crops go through the purifier exactly as a worker runs it: clean reals,
clean fakes, and one FGSM or PGD copy of other fakes (``calibrate.mixed_attacks``, ε 0.01–0.03:
what the purifier mostly sees in production, frames the tamper check found perturbed). Clean
and attacked fakes come from disjoint crops (alternate ones), so one face is not counted twice.
Each purified crop keeps its video's group, so a split by group never puts one video's crops on
both sides. Only training crops are used; the held-out crops of an evaluation are never seen.

Uses: ``purify_fit`` (a threshold for purified crops) and ``write_image_folder`` for fine-tuning
a detector on purified crops (``models/build_default.py``), so purified reals stay real.

Example:
    >>> crops = purify_training_crops(det, "train_crops/", n_real=128, n_fake=64, n_attacked=64)
    >>> write_image_folder(crops, "purified/")   # real/<video>__p0_dip.png, fake/…
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from server.errors import ConfigError
from server.robust.calibrate import evenly, mixed_attacks, quantize, to_tensor
from server.robust.dip import Purifier
from server.robust.purification import purifier_config
from server.robust.tamper.score import CALIBRATION_EPS
from server.vision.datasets import CLASS_DIRS, CROP_MARGIN, GROUP_SEP, Item, load_items, read_rgb, write_rgb
from server.vision.detector import Detector

# Crops purified per call of the purifier: bounds memory (the CPU preset fits 64² networks in
# groups of its own) and lets progress be reported.
CHUNK = 32
KINDS = ("real", "fake", "attacked")
# The part of a purified crop's file name after the group, per kind (``p`` clean, ``a`` attacked).
_TAG = {"real": "p", "fake": "p", "attacked": "a"}


@dataclass
class PurifiedCrops:
    """Purified crops (8-bit grid, [0, 1]) with what each one was."""

    images: torch.Tensor  # (N, 3, H, W)
    kinds: list[str]  # "real" | "fake" | "attacked"
    groups: list[str]  # the source crop's group (video)
    seconds: float  # purification only

    def labels(self) -> np.ndarray:
        """1 for fakes (clean or attacked), 0 for reals."""
        return np.array([0 if k == "real" else 1 for k in self.kinds], np.int64)

    def of(self, kind: str) -> torch.Tensor:
        """The images of one kind, in order."""
        return self.images[[i for i, k in enumerate(self.kinds) if k == kind]]


def _rgb(it: Item) -> np.ndarray:
    return it.source if isinstance(it.source, np.ndarray) else read_rgb(it.source)


def purify_training_crops(
    det: Detector,
    data: str | Path,
    *,
    n_real: int,
    n_fake: int,
    n_attacked: int,
    preset: str = "cpu",
    iterations: int = 0,
    every: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> PurifiedCrops:
    """Purify ``n_real`` reals, ``n_fake`` clean fakes and ``n_attacked`` attacked fakes of the
    training folder ``data`` (spread evenly over it) with the purifier a worker of this ``preset``
    / ``iterations`` runs. ``progress(done, total)`` is called after each chunk."""
    size: tuple[int, int] = tuple(det.card.input_size)  # type: ignore[assignment]
    items = load_items(data, size=size, every=every, margin=CROP_MARGIN)
    real = [it for it in items if it.label == 0]
    fake = [it for it in items if it.label != 0]
    if not real or not fake:
        raise ConfigError(f"{data} needs both real and fake face crops to purify", path=str(data))
    picked = {
        "real": evenly(real, n_real),
        "fake": evenly(fake[0::2], n_fake),
        "attacked": evenly(fake[1::2], n_attacked),
    }
    tensors = {kind: to_tensor([_rgb(it) for it in its], size) for kind, its in picked.items()}
    others = tensors["attacked"]
    labels = torch.ones(len(others), dtype=torch.long)
    tensors["attacked"] = mixed_attacks(det.pixel_model(), others, labels, CALIBRATION_EPS, seed=seed)
    batch = torch.cat([tensors[k] for k in KINDS])
    kinds = [k for k in KINDS for _ in picked[k]]
    groups = [it.group for k in KINDS for it in picked[k]]
    purifier = Purifier(purifier_config(preset, iterations=iterations))
    outs, seconds = [], 0.0
    for start in range(0, len(batch), CHUNK):
        result = purifier.purify(batch[start : start + CHUNK], generator_seed=seed + start)
        outs.append(quantize(result.images))
        seconds += result.seconds
        if progress is not None:
            progress(min(start + CHUNK, len(batch)), len(batch))
    images = torch.cat(outs) if outs else batch
    return PurifiedCrops(images, kinds, groups, seconds)


def write_image_folder(crops: PurifiedCrops, out: str | Path) -> dict[str, int]:
    """Write the crops as an image folder (``real/``, ``fake/``; ``<group>__<p|a><i>_dip.png``, so
    a split by group keeps each video on one side); counts per class."""
    out = Path(out)
    dirs = {label: name for name, label in CLASS_DIRS.items()}
    counts = {name: 0 for name in CLASS_DIRS}
    arr = (crops.images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for d in CLASS_DIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
    for i, (kind, group, image) in enumerate(zip(crops.kinds, crops.groups, arr, strict=True)):
        d = dirs[0 if kind == "real" else 1]
        name = group.rsplit("/", 1)[-1]
        write_rgb(out / d / f"{name}{GROUP_SEP}{_TAG[kind]}{i}_dip.png", np.ascontiguousarray(image))
        counts[d] += 1
    return counts
