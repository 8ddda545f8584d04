"""Fit ``purify.json`` (``server.robust.purify_calibration``): purify training crops, read the cut.

Three groups of training crops go through the purifier exactly as a worker runs it: clean reals,
clean fakes, and one FGSM or PGD copy of other fakes (``calibrate.mixed_attacks``, ε 0.01–0.03:
what the purifier mostly sees in production, frames the tamper check found perturbed). The
threshold is the balanced-accuracy cut between the purified reals and the purified fakes of
both kinds (``fit_threshold``). Only training crops are used; the held-out crops the evaluation
reads are never seen.

Example:
    >>> cal = fit_purified_threshold("models/default", "/tmp/unmask-robustness/train_crops")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.robust.calibrate import evenly, load_crops, mixed_attacks, quantize, to_tensor
from server.robust.dip import Purifier
from server.robust.purification import purifier_config
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
    size = tuple(det.card.input_size)
    real, fake = load_crops(data, size, every=every, max_per_class=None)  # type: ignore[arg-type]
    reals = to_tensor(evenly(real, per_group), size)
    # Clean and attacked fakes from disjoint crops (alternate ones), so one face is not counted twice.
    fakes = to_tensor(evenly(fake[0::2], per_group), size)
    others = to_tensor(evenly(fake[1::2], per_group), size)
    labels = torch.ones(len(others), dtype=torch.long)
    attacked = mixed_attacks(det.pixel_model(), others, labels, CALIBRATION_EPS, seed=seed)
    cfg = purifier_config(preset, iterations=iterations)
    batch = torch.cat([reals, fakes, attacked])
    result = Purifier(cfg).purify(batch, generator_seed=seed)
    scores = _scores(det, result.images)
    n_r, n_f = len(reals), len(fakes)
    s_real, s_fake, s_att = scores[:n_r], scores[n_r : n_r + n_f], scores[n_r + n_f :]
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
        "n_attacked": len(attacked),
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
        "seconds_per_crop": round(result.seconds / len(batch), 2),
        "fit_seconds": round(time.perf_counter() - started, 1),
    }
    cal = PurifiedThreshold(threshold, det.card.weights_sha256, cfg.version(), stats)
    if save:
        cal.save(Path(model_dir) / PURIFY_FILENAME)
    return cal
