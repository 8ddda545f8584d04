"""Fit a detector's tamper calibration on clean face crops and write ``tamper.json`` beside its card.

The clean frames are the crops as the request path sees them (8-bit, detector-sized); the
attacked frames are FGSM and L∞ PGD copies of them at the paper's ε and around it
(``calibration_attacks``), rounded to 8 bits as any decoded video frame is. The server loads
``<model_dir>/tamper.json`` at start-up (``server.analysis.runtime``).

Example:
    >>> real, fake = load_crops("samples/", size=(128, 128), every=3)
    >>> scorer = fit_tamper("models/default", real, fake)   # writes models/default/tamper.json
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from server.errors import ConfigError
from server.robust.tamper.checks import CheckConfig
from server.robust.tamper.score import (
    CALIBRATION_BATCH,
    CALIBRATION_EPS,
    DEFAULT_TARGET_FPR,
    TAMPER_FILENAME,
    TamperScorer,
    calibration_attacks,
)
from server.vision.datasets import CROP_MARGIN, Item, load_items, read_rgb
from server.vision.detector import Detector

# Clean crops per class the fit uses at most: 300 + 300 clean and 6x as many attacked frames
# keep a CPU fit to a minute or two, and the 5 % quantile then rests on ~30 clean frames.
MAX_CROPS_PER_CLASS = 300
# L∞ PGD steps of the calibration attacks (Madry's 10, as ``calibration_attacks`` defaults).
CALIBRATION_PGD_STEPS = 10
# ε values of the calibration attacks: around the paper's 0.02 (``score.CALIBRATION_EPS``).
FIT_EPS = CALIBRATION_EPS


def to_tensor(crops: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 RGB crops → (N, 3, H, W) float in [0, 1] at ``size`` (resized like the detector)."""
    h, w = size
    out = []
    for c in crops:
        if c.shape[:2] != (h, w):
            shrink = c.shape[0] > h or c.shape[1] > w
            c = cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out.append(c)
    if not out:
        return torch.empty((0, 3, h, w))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255.0)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] pixels to the 8-bit grid, as every decoded video frame is."""
    return (images.clamp(0, 1) * 255).round() / 255


def evenly(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items spread evenly over ``items`` (all of them when None)."""
    items = list(items)
    if limit is None or len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def crops_of(
    items: Sequence[Item], max_per_class: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(real, fake) RGB crops of dataset items (self-blend entries count as fake), capped per class."""
    by_label: dict[int, list[Item]] = {0: [], 1: []}
    for it in items:
        by_label[0 if it.label == 0 else 1].append(it)
    out = []
    for label in (0, 1):
        picked = evenly(by_label[label], max_per_class)
        out.append([it.source if isinstance(it.source, np.ndarray) else read_rgb(it.source) for it in picked])
    return out[0], out[1]


def load_crops(
    data: str | Path,
    size: tuple[int, int],
    *,
    every: int = 1,
    max_per_class: int | None = MAX_CROPS_PER_CLASS,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(real, fake) face crops of a sample folder (``real/`` + ``fake/`` videos or images)."""
    real, fake = crops_of(load_items(data, size=size, every=every, margin=CROP_MARGIN), max_per_class)
    if not real or not fake:
        raise ConfigError(f"{data} needs both real and fake face crops for a tamper fit", path=str(data))
    return real, fake


def attack_in_chunks(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[float],
    *,
    pgd_steps: int = CALIBRATION_PGD_STEPS,
    seed: int = 0,
    batch: int = CALIBRATION_BATCH,
) -> torch.Tensor:
    """``calibration_attacks`` over ``batch``-sized chunks (bounded memory), rounded to 8 bits.

    Same order as one ``calibration_attacks`` call: (FGSM ε₁, PGD ε₁, FGSM ε₂, …), each of all images.
    """
    copies = 2 * len(eps_values)
    parts = [
        calibration_attacks(model, x, y, eps_values, pgd_steps=pgd_steps, seed=seed).unflatten(
            0, (copies, -1)
        )
        for x, y in zip(images.split(batch), labels.split(batch), strict=True)
    ]
    return quantize(torch.cat(parts, dim=1).flatten(0, 1)) if parts else images[:0]


def fit_tamper(
    model_dir: str | Path,
    crops_real: Sequence[np.ndarray],
    crops_fake: Sequence[np.ndarray],
    *,
    target_fpr: float = DEFAULT_TARGET_FPR,
    eps_values: Sequence[float] = CALIBRATION_EPS,
    config: CheckConfig | None = None,
    pgd_steps: int = CALIBRATION_PGD_STEPS,
    seed: int = 0,
    save: bool = True,
) -> TamperScorer:
    """Fit the tamper scorer of the detector in ``model_dir`` and save ``<model_dir>/tamper.json``.

    Clean frames: every given crop (real and fake alike: tampering is about perturbations, not
    manipulation). Attacked frames: FGSM + PGD copies at each ε of ``eps_values`` against the
    detector's own gradients, untargeted on the true label. The threshold flags at most
    ``target_fpr`` of the clean frames (out-of-fold).
    """
    if not crops_real or not crops_fake:
        raise ConfigError("fit_tamper needs real and fake crops")
    started = time.perf_counter()
    det = Detector.load(model_dir, device="cpu")
    model = det.pixel_model()
    size = tuple(det.card.input_size)
    clean = torch.cat([to_tensor(crops_real, size), to_tensor(crops_fake, size)])
    labels = torch.cat([torch.zeros(len(crops_real)), torch.ones(len(crops_fake))]).long()
    attacked = attack_in_chunks(model, clean, labels, eps_values, pgd_steps=pgd_steps, seed=seed)
    scorer = TamperScorer(config).fit_frames(model, clean, attacked, target_fpr=target_fpr)
    scorer.stats.update(
        detector=f"{det.card.id}@{det.card.version}",
        weights_sha256=det.card.weights_sha256,
        n_real=len(crops_real),
        n_fake=len(crops_fake),
        attacks=["fgsm", f"pgd_linf_{pgd_steps}"],
        eps=[float(e) for e in eps_values],
        fit_seconds=round(time.perf_counter() - started, 1),
    )
    if save:
        scorer.save(Path(model_dir) / TAMPER_FILENAME)
    return scorer


def fit_tamper_on_data(
    model_dir: str | Path,
    data: str | Path,
    *,
    every: int = 1,
    max_per_class: int | None = MAX_CROPS_PER_CLASS,
    target_fpr: float = DEFAULT_TARGET_FPR,
) -> TamperScorer:
    """``fit_tamper`` on the face crops of a sample folder (what ``unmask tamper fit`` runs)."""
    from server.vision.checkpoint import load_card

    size = tuple(load_card(model_dir).input_size)
    real, fake = load_crops(data, size, every=every, max_per_class=max_per_class)  # type: ignore[arg-type]
    # Module constants read at call time, so a test can shrink the attacks.
    return fit_tamper(
        model_dir, real, fake, target_fpr=target_fpr, eps_values=FIT_EPS, pgd_steps=CALIBRATION_PGD_STEPS
    )
