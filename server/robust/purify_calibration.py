"""A decision threshold for purified crops, fitted on purified clean training crops.

Deep Image Prior output is smoother than any frame the detector was trained on, and the default
detector (trained with self-blended pseudo-fakes) reads smoothness as manipulation: with the
CPU preset, purified reals score P(fake) ≈ 0.9 where clean reals score ≈ 0.1. The card's
threshold was fitted on unpurified crops, so it is the wrong cut for purified ones. This module
fits the cut on the detector's scores of *purified* training crops (reals and fakes, never the
held-out ones) and stores it as ``<model_dir>/purify.json``, recording the detector weights'
SHA-256 and the purifier config version it belongs to; a file that matches neither is ignored
with a warning, as ``tamper.json`` is.

Workers map every purified score onto the card's scale (``to_card_scale``: a shift in logit
space that puts the purified threshold where the card's threshold is), so the verdict code
compares every score, purified or not, with the card's threshold and averages them as before.

Example:
    >>> cal = PurifiedThreshold.load_for("models/default", card.weights_sha256, cfg.version())
    >>> card_scores = cal.to_card_scale(raw_purified_scores, card.threshold)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import CheckpointError

_LOGGER = logging.getLogger(__name__)

PURIFY_FILENAME = "purify.json"
FORMAT = "unmask-purified-threshold"
FORMAT_VERSION = 1
# Probabilities are clipped this far from 0 and 1 before taking logits (a float32 P(fake) of 1.0).
_EPS = 1e-7


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def fit_threshold(real_scores: Sequence[float], fake_scores: Sequence[float]) -> tuple[float, dict[str, Any]]:
    """The cut on P(fake) with the best balanced accuracy between purified reals and fakes.

    Balanced, not plain, accuracy: the paper's measure weighs the restored fakes and the kept
    crops as two rates, whatever the class sizes of the fit. The cut lies halfway (in logit
    space) between the two neighbouring scores it separates, so it is not tuned to one crop;
    among equally good cuts the middle one is taken. Returns (threshold, stats).
    """
    real = np.sort(np.asarray(real_scores, dtype=np.float64))
    fake = np.sort(np.asarray(fake_scores, dtype=np.float64))
    if not len(real) or not len(fake):
        raise ValueError("fit_threshold needs purified real and fake scores")
    values = np.unique(np.r_[real, fake])
    # Candidate cuts: below everything, between neighbours, above everything (logit midpoints).
    z = _logit(values)
    cuts_z = np.r_[z[0] - 1.0, (z[:-1] + z[1:]) / 2, z[-1] + 1.0]
    cuts = 1 / (1 + np.exp(-cuts_z))
    # A score is called fake when >= the cut.
    real_right = np.searchsorted(real, cuts, side="left") / len(real)
    fake_right = 1 - np.searchsorted(fake, cuts, side="left") / len(fake)
    balanced = (real_right + fake_right) / 2
    best = np.flatnonzero(np.isclose(balanced, balanced.max()))
    i = int(best[len(best) // 2])
    stats = {
        "n_real": len(real),
        "n_fake": len(fake),
        "real_right": float(real_right[i]),
        "fake_right": float(fake_right[i]),
        "balanced_accuracy": float(balanced[i]),
    }
    return float(cuts[i]), stats


@dataclass(frozen=True)
class PurifiedThreshold:
    """The purified-crop threshold on the detector's calibrated P(fake), and what it belongs to."""

    threshold: float
    weights_sha256: str
    purifier_version: str
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"a purified threshold must lie in (0, 1), got {self.threshold}")

    def to_card_scale(self, scores: np.ndarray | Sequence[float], card_threshold: float) -> np.ndarray:
        """Purified P(fake) → a score on the card's scale: ``≥ card_threshold`` exactly when the
        purified score is ``≥ self.threshold`` (one shift in logit space, order kept)."""
        shift = float(_logit(card_threshold) - _logit(self.threshold))
        z = _logit(np.asarray(scores, dtype=np.float64)) + shift
        return 1 / (1 + np.exp(-z))

    def says_fake(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """The decision on purified P(fake) scores."""
        return np.asarray(scores, dtype=np.float64) >= self.threshold

    def tag(self) -> str:
        """Short hash of the decision rule, part of a purification result's version: results
        computed under another calibration are never reused for this one."""
        blob = json.dumps([self.threshold, self.weights_sha256, self.purifier_version])
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``save``)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "threshold": self.threshold,
            "weights_sha256": self.weights_sha256,
            "purifier_version": self.purifier_version,
            "stats": self.stats,
        }

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (next to the model card)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PurifiedThreshold:
        """Read a calibration written by ``save``."""
        try:
            data = json.loads(Path(path).read_text())
            if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} file")
            return cls(
                threshold=float(data["threshold"]),
                weights_sha256=str(data["weights_sha256"]),
                purifier_version=str(data["purifier_version"]),
                stats=dict(data.get("stats") or {}),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot read purified-crop threshold {path}: {exc}") from exc

    @classmethod
    def load_for(
        cls, model_dir: str | Path, weights_sha256: str, purifier_version: str
    ) -> PurifiedThreshold | None:
        """``<model_dir>/purify.json`` if it was fitted for these weights and this purifier, else None.

        Purified scores of other weights or another purifier config come from another
        distribution; a threshold fitted on them would call the wrong crops fake, so the file is
        ignored with a warning and purified crops are judged by the card's threshold (what
        Unmask did before this calibration) until ``unmask purify fit`` is run again.
        """
        path = Path(model_dir) / PURIFY_FILENAME
        if not path.exists():
            return None
        cal = cls.load(path)
        problems = []
        if cal.weights_sha256 != weights_sha256:
            problems.append(f"detector weights {cal.weights_sha256[:12]}…, these are {weights_sha256[:12]}…")
        if cal.purifier_version != purifier_version:
            problems.append(f"purifier config {cal.purifier_version}, this one is {purifier_version}")
        if problems:
            _LOGGER.warning(
                "ignoring %s: fitted for %s; purified crops use the card's threshold until "
                "`unmask purify fit` is run again",
                path,
                " and ".join(problems),
            )
            return None
        return cal
