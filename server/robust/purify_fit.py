"""Fit ``purify.json`` (``server.robust.purify_calibration``): purify training crops, read the cut.

The crops are ``purified_crops.purify_training_crops``: clean reals, clean fakes and FGSM/PGD
copies of other fakes of the training folder, purified as a worker purifies. The threshold is the
balanced-accuracy cut between the purified reals and the purified fakes of both kinds
(``fit_threshold``). Only training crops are used; the held-out crops the evaluation reads are
never seen.

Example:
    >>> cal = fit_purified_threshold("models/default", "/tmp/unmask-robustness/train_crops")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.robust.calibrate import quantize
from server.robust.purification import purifier_config
from server.robust.purified_crops import purify_training_crops
from server.robust.purify_calibration import PURIFY_FILENAME, PurifiedThreshold, fit_threshold
from server.robust.tamper.score import CALIBRATION_EPS
from server.vision.detector import Detector

# Crops per group (reals, clean fakes, attacked fakes): 48 × 3 take about 8 minutes on one
# CPU thread with the CPU preset (3.2 s a crop, measured), the cost of one tamper fit and a half.
DEFAULT_PER_GROUP = 48


def _scores(det: Detector, images: torch.Tensor) -> np.ndarray:
    """The detector's calibrated P(fake) of [0, 1] crops, on the 8-bit grid a worker scores."""
    arr = (quantize(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.asarray(det.predict(list(np.ascontiguousarray(arr))), dtype=np.float64)


def fit_purified_threshold(
    model_dir: str | Path,
    data: str | Path,
    *,
    preset: str = "cpu",
    iterations: int = 0,
    per_group: int = DEFAULT_PER_GROUP,
    every: int = 1,
    seed: int = 0,
    save: bool = True,
) -> PurifiedThreshold:
    """Purify ``per_group`` training reals, fakes and attacked fakes of ``data`` with the purifier
    a worker of this ``preset`` / ``iterations`` runs, fit the threshold, write ``purify.json``."""
    started = time.perf_counter()
    det = Detector.load(model_dir, device="cpu")
    crops = purify_training_crops(
        det,
        data,
        n_real=per_group,
        n_fake=per_group,
        n_attacked=per_group,
        preset=preset,
        iterations=iterations,
        every=every,
        seed=seed,
    )
    cfg = purifier_config(preset, iterations=iterations)
    s_real, s_fake, s_att = (_scores(det, crops.of(kind)) for kind in ("real", "fake", "attacked"))
    n_r, n_f = len(s_real), len(s_fake)
    threshold, fit = fit_threshold(s_real, np.r_[s_fake, s_att])
    card_t = det.card.threshold
    stats: dict[str, Any] = {
        "detector": f"{det.card.id}@{det.card.version}",
        "card_threshold": card_t,
        "preset": preset,
        "iterations": iterations or cfg.fixed_iter or cfg.max_iters,
        "data": str(data),
        "n_real": n_r,
        "n_fake": n_f,
        "n_attacked": len(s_att),
        "attacks": f"FGSM / PGD-10 L∞ at ε {list(CALIBRATION_EPS)}, one per crop",
        # In-sample rates of the fitted cut, and what the card's threshold did on the same crops.
        "real_right": float(np.mean(s_real < threshold)),
        "fake_right": float(np.mean(s_fake >= threshold)),
        "attacked_right": float(np.mean(s_att >= threshold)),
        "balanced_accuracy": fit["balanced_accuracy"],
        "card_real_right": float(np.mean(s_real < card_t)),
        "card_fake_right": float(np.mean(np.r_[s_fake, s_att] >= card_t)),
        "median_scores": {
            "real": float(np.median(s_real)),
            "fake": float(np.median(s_fake)),
            "attacked": float(np.median(s_att)),
        },
        "seconds_per_crop": round(crops.seconds / len(crops.kinds), 2),
        "fit_seconds": round(time.perf_counter() - started, 1),
    }
    cal = PurifiedThreshold(threshold, det.card.weights_sha256, cfg.version(), stats)
    if save:
        cal.save(Path(model_dir) / PURIFY_FILENAME)
    return cal
