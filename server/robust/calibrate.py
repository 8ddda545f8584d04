"""Fit a detector's tamper calibration on clean face crops and write ``tamper.json`` beside its card.

Clean frames: the crops as the request path sees them (8-bit, detector-sized), plus copies that
went through a one-frame x264 encode. Attacked frames, two families:

* the paper's: one FGSM or L∞ PGD copy of every crop, at ε 0.01 / 0.02 / 0.03 in turn, rounded
  to 8 bits (dense crop-level noise: residual statistics catch it);
* an attacker's who publishes video: compression-robust perturbations made in frame space and
  passed through a real x264 encode (``codec_attack.codec_robust_crops``). These are smooth and
  survive squeezing by design; without them the fit learns "tampered = noisy" and misses them
  (measured: 0 % of the headline video's frames flagged).

One copy per crop for the paper's family keeps the two families about equal in the fit (the
logistic weighs rows, and six noisy copies per crop drowned the codec family). The server loads
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
from server.robust.attacks.fgsm import FGSM
from server.robust.attacks.pgd import PGD
from server.robust.codec_attack import codec_robust_crops, decision_offset
from server.robust.tamper.checks import CheckConfig
from server.robust.tamper.score import (
    CALIBRATION_BATCH,
    CALIBRATION_EPS,
    TAMPER_FILENAME,
    TamperScorer,
)
from server.vision.datasets import CROP_MARGIN, Item, load_items, read_rgb
from server.vision.detector import Detector

# Clean crops per class the fit uses at most: 300 + 300 keep a CPU fit to a few minutes, and
# the 5 % quantile then rests on ~30 clean frames.
MAX_CROPS_PER_CLASS = 300
# Per-frame false-positive rate the threshold is set for. One suspicious frame makes a verdict
# "tampered" and costs a purification: at 5 % per frame (the tamper check's own default), 3 of 6
# clean sample videos had a flagged frame at 2 frames/s (measured); at 1 %, none of them.
FIT_TARGET_FPR = 0.01
# L∞ PGD steps of the calibration attacks (Madry's 10, as ``score.calibration_attacks``).
CALIBRATION_PGD_STEPS = 10
# ε values of the calibration attacks: around the paper's 0.02 (``score.CALIBRATION_EPS``).
FIT_EPS = CALIBRATION_EPS
# Compression-robust family: budgets from below the paper's ε to twice it (2–8 / 255), face
# crops of 84–176 px in the frame (the sample videos' faces plus the 0.3 margin), 20 EOT steps,
# on at most this many crops (the costliest part of a fit: ~1 s per crop on one loaded core).
CODEC_EPS = (2 / 255, 4 / 255, 6 / 255, 8 / 255)
CODEC_SIDES = (84, 176)
CODEC_STEPS = 20
CODEC_MAX_CROPS = 200


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


def mixed_attacks(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[float],
    *,
    pgd_steps: int = CALIBRATION_PGD_STEPS,
    seed: int = 0,
) -> torch.Tensor:
    """One FGSM or PGD copy per image, cycling through (FGSM ε₁, PGD ε₁, FGSM ε₂, …), 8-bit."""
    kinds = [(attack, eps) for eps in eps_values for attack in ("fgsm", "pgd")]
    out = torch.empty_like(images)
    for k, (attack, eps) in enumerate(kinds):
        if k >= len(images):  # fewer images than kinds (torch.arange refuses an empty range here)
            break
        idx = torch.arange(k, len(images), len(kinds))
        if attack == "fgsm":
            make = FGSM(model, eps)
        else:
            make = PGD(model, eps, steps=pgd_steps, norm="linf", seed=seed)
        for part in idx.split(CALIBRATION_BATCH):
            out[part] = make(images[part], labels[part])
    return quantize(out)


def _features(scorer: TamperScorer, model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    rows = [scorer.features(model, part) for part in images.split(CALIBRATION_BATCH)]
    return np.vstack(rows) if rows else np.empty((0, len(scorer.feature_names)))


def fit_tamper(
    model_dir: str | Path,
    crops_real: Sequence[np.ndarray],
    crops_fake: Sequence[np.ndarray],
    *,
    target_fpr: float = FIT_TARGET_FPR,
    eps_values: Sequence[float] = CALIBRATION_EPS,
    config: CheckConfig | None = None,
    pgd_steps: int = CALIBRATION_PGD_STEPS,
    codec_max: int = CODEC_MAX_CROPS,
    codec_steps: int = CODEC_STEPS,
    seed: int = 0,
    save: bool = True,
) -> TamperScorer:
    """Fit the tamper scorer of the detector in ``model_dir`` and save ``<model_dir>/tamper.json``.

    Clean frames: every given crop (real and fake alike: tampering is about perturbations, not
    manipulation) and x264 copies of up to ``codec_max`` of them. Attacked: one FGSM/PGD copy
    per crop (``mixed_attacks``) and the compression-robust copies (``codec_max`` = 0 skips
    them). The threshold flags at most ``target_fpr`` of the clean frames (out-of-fold).
    """
    if not crops_real or not crops_fake:
        raise ConfigError("fit_tamper needs real and fake crops")
    started = time.perf_counter()
    det = Detector.load(model_dir, device="cpu")
    model = det.pixel_model()
    size = tuple(det.card.input_size)
    clean = torch.cat([to_tensor(crops_real, size), to_tensor(crops_fake, size)])
    labels = torch.cat([torch.zeros(len(crops_real)), torch.ones(len(crops_fake))]).long()
    families = {"paper": mixed_attacks(model, clean, labels, eps_values, pgd_steps=pgd_steps, seed=seed)}
    clean_sets = [clean]
    if codec_max > 0:
        picked = evenly([*crops_real, *crops_fake], codec_max)
        offset = decision_offset(det.card.calibration, det.card.threshold)
        enc_clean, enc_attacked = codec_robust_crops(
            model,
            picked,
            offset=offset,
            eps_values=CODEC_EPS,
            sides=CODEC_SIDES,
            steps=codec_steps,
            seed=seed,
        )
        clean_sets.append(to_tensor(list(enc_clean), size))
        families["codec"] = to_tensor(list(enc_attacked), size)
    scorer = TamperScorer(config)
    clean_rows = _features(scorer, model, torch.cat(clean_sets))
    family_rows = {name: _features(scorer, model, images) for name, images in families.items()}
    scorer.fit(clean_rows, np.vstack(list(family_rows.values())), target_fpr=target_fpr)
    scorer.stats.update(
        detector=f"{det.card.id}@{det.card.version}",
        weights_sha256=det.card.weights_sha256,
        n_real=len(crops_real),
        n_fake=len(crops_fake),
        attacks={"paper": f"FGSM / PGD-{pgd_steps} L∞, one per crop", "codec": "frame-space EOT-PGD + x264"},
        eps=[float(e) for e in eps_values],
        codec_eps=[round(e, 5) for e in CODEC_EPS] if codec_max > 0 else [],
        # In-sample (the fit saw these rows): the out-of-fold rate over both is attacked_tpr.
        family_tpr={
            n: float(scorer.suspicious(scorer.score_features(r)).mean()) for n, r in family_rows.items()
        },
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
    target_fpr: float = FIT_TARGET_FPR,
    config: CheckConfig | None = None,
) -> TamperScorer:
    """``fit_tamper`` on the face crops of a sample folder (what ``unmask tamper fit`` runs)."""
    from server.vision.checkpoint import load_card

    size = tuple(load_card(model_dir).input_size)
    real, fake = load_crops(data, size, every=every, max_per_class=max_per_class)  # type: ignore[arg-type]
    # Module constants read at call time, so a test can shrink the attacks.
    return fit_tamper(
        model_dir,
        real,
        fake,
        target_fpr=target_fpr,
        eps_values=FIT_EPS,
        config=config,
        pgd_steps=CALIBRATION_PGD_STEPS,
        codec_max=CODEC_MAX_CROPS,
        codec_steps=CODEC_STEPS,
    )
