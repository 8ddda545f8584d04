"""One calibrated tamper score per frame, with a threshold set for a target false-positive rate."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from server.errors import CheckpointError
from server.robust.attacks.fgsm import FGSM
from server.robust.attacks.pgd import PGD
from server.robust.tamper.checks import (
    FEATURE_SIGNS,
    CheckConfig,
    Forward,
    tamper_features,
    tamper_features_and_logits,
)

_LOGGER = logging.getLogger(__name__)

FORMAT_VERSION = 1
# The calibration is stored beside the detector's model card, one per detector version.
TAMPER_FILENAME = "tamper.json"
METHODS = ("logistic", "zscore")
# Clean frames above the threshold become "suspicious" and cost a purification; 5 % keeps
# the DIP queue at a small fraction of traffic (the done-when is FPR <= 5 %).
DEFAULT_TARGET_FPR = 0.05
# Calibration attack budgets around the paper's ε = 0.02, so the fit sees weaker and
# stronger perturbations than the one the evaluation uses.
CALIBRATION_EPS = (0.01, 0.02, 0.03)
# Ridge strength of the logistic fit, 0.5·λ·‖w‖² on the summed loss (scikit-learn's default
# C = 1): it keeps the weights finite when clean and attacked frames separate perfectly and
# barely biases the probabilities once there are hundreds of frames.
L2_PENALTY = 1.0
# Folds for the out-of-fold clean scores the threshold is read from: scores of frames the
# fit has seen are optimistic (fewer clean frames above any threshold than in production).
THRESHOLD_FOLDS = 5
# Crops per forward while calibrating: each crop goes through the model 1 + variants times.
CALIBRATION_BATCH = 64
_NEWTON_STEPS = 50
_STD_FLOOR = 1e-6


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -z))


def calibration_attacks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[float] = CALIBRATION_EPS,
    *,
    pgd_steps: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """FGSM and L∞ PGD copies of ``images`` at each ε, concatenated: (2·len(eps)·B, 3, H, W)."""
    out = []
    for eps in eps_values:
        out.append(FGSM(model, eps)(images, labels))
        out.append(PGD(model, eps, steps=pgd_steps, norm="linf", seed=seed)(images, labels))
    return torch.cat(out)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2_PENALTY) -> tuple[np.ndarray, float]:
    """Class-balanced, ridge-penalised logistic regression by Newton's method: (weights, bias)."""
    n, f = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    pos = max(int(y.sum()), 1)
    sample_w = np.where(y == 1, n / (2 * pos), n / (2 * max(n - pos, 1)))
    ridge = np.diag([l2] * f + [0.0])
    w = np.zeros(f + 1)
    for _ in range(_NEWTON_STEPS):
        p = _sigmoid(design @ w)
        grad = design.T @ (sample_w * (p - y)) + ridge @ w
        hess = design.T @ (design * (sample_w * p * (1 - p))[:, None]) + ridge + 1e-9 * np.eye(f + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:f], float(w[f])


def _labels(clean: np.ndarray, attacked: np.ndarray) -> np.ndarray:
    """0 for each clean row, 1 for each attacked row."""
    return np.r_[np.zeros(len(clean)), np.ones(len(attacked))]


class TamperScorer:
    """Combines the per-frame tamper features into one score in [0, 1] and a threshold.

    ``fit`` standardises each feature on clean calibration frames. With attacked frames too
    (``calibration_attacks``: FGSM + PGD at several ε) it fits a logistic regression, so the
    score is a calibrated probability of tampering under a balanced prior
    (``method="logistic"``). Without them it falls back to the largest oriented z-score
    through a logistic, a monotone score that is *not* a probability (``method="zscore"``).
    Either way the threshold is the clean-score quantile that flags at most ``target_fpr``
    of clean frames (for the logistic fit, out-of-fold scores, so frames the fit has seen
    do not make it optimistic); frames with ``score > threshold`` are suspicious.

    Example:
        >>> scorer = TamperScorer().fit_frames(model, clean, calibration_attacks(model, clean, y))
        >>> scores = scorer.score(model, crops)          # (B,) in [0, 1]
        >>> scorer.suspicious(scores)                    # (B,) bool
        >>> scorer.save(card_dir / TAMPER_FILENAME)
    """

    def __init__(self, config: CheckConfig | None = None) -> None:
        self.config = config or CheckConfig()
        self.method: str | None = None
        self.mean = self.std = self.weights = None
        self.bias = 0.0
        self.threshold = 1.0
        self.target_fpr = DEFAULT_TARGET_FPR
        self.stats: dict[str, Any] = {}

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Columns of ``features``."""
        return self.config.feature_names()

    @property
    def fitted(self) -> bool:
        """Whether ``fit`` (or ``load``) has run."""
        return self.method is not None

    def features(
        self,
        model: nn.Module,
        images: torch.Tensor,
        *,
        logits: torch.Tensor | None = None,
        forward: Forward | None = None,
    ) -> np.ndarray:
        """(B, F) raw features of a batch of [0, 1] crops (``logits``: the detector's, if known;
        ``forward``: what runs the no-grad forward instead of ``model``)."""
        return tamper_features(model, images, self.config, logits=logits, forward=forward)

    def fit(
        self, clean: np.ndarray, attacked: np.ndarray | None = None, *, target_fpr: float = DEFAULT_TARGET_FPR
    ) -> TamperScorer:
        """Fit on feature rows of clean (and optionally attacked) frames; returns self."""
        clean = self._check_features(clean)
        if not 0 < target_fpr < 1:
            raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
        if len(clean) < 2:
            raise ValueError("fit needs at least two clean frames")
        self.mean = clean.mean(axis=0)
        self.std = np.maximum(clean.std(axis=0), _STD_FLOOR)
        self.target_fpr = target_fpr
        attacked = None if attacked is None or not len(attacked) else self._check_features(attacked)
        if attacked is None:
            self.method, self.weights, self.bias = "zscore", None, 0.0
            clean_scores, attacked_scores = self.score_features(clean), None
        else:
            self.method = "logistic"
            self.weights, self.bias = fit_logistic(
                self._standardise(np.vstack([clean, attacked])), _labels(clean, attacked)
            )
            clean_scores, attacked_scores = self._out_of_fold_scores(clean, attacked)
        self.threshold = float(np.quantile(clean_scores, 1 - target_fpr, method="higher"))
        self.stats = {"n_clean": len(clean), "clean_fpr": float((clean_scores > self.threshold).mean())}
        if attacked_scores is not None:
            self.stats["n_attacked"] = len(attacked)
            self.stats["attacked_tpr"] = float((attacked_scores > self.threshold).mean())
        return self

    def _out_of_fold_scores(self, clean: np.ndarray, attacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every frame from a logistic fit that did not see it (k-fold)."""
        folds = min(THRESHOLD_FOLDS, len(clean), len(attacked))
        if folds < 2:
            return self.score_features(clean), self.score_features(attacked)
        clean_fold = np.arange(len(clean)) % folds
        attacked_fold = np.arange(len(attacked)) % folds
        clean_scores, attacked_scores = np.empty(len(clean)), np.empty(len(attacked))
        for k in range(folds):
            c_train, a_train = clean[clean_fold != k], attacked[attacked_fold != k]
            weights, bias = fit_logistic(
                self._standardise(np.vstack([c_train, a_train])), _labels(c_train, a_train)
            )
            clean_scores[clean_fold == k] = _sigmoid(
                self._standardise(clean[clean_fold == k]) @ weights + bias
            )
            attacked_scores[attacked_fold == k] = _sigmoid(
                self._standardise(attacked[attacked_fold == k]) @ weights + bias
            )
        return clean_scores, attacked_scores

    def fit_frames(
        self,
        model: nn.Module,
        clean_images: torch.Tensor,
        attacked_images: torch.Tensor | None = None,
        *,
        target_fpr: float = DEFAULT_TARGET_FPR,
        batch_size: int = CALIBRATION_BATCH,
    ) -> TamperScorer:
        """``fit`` on features computed from image batches, ``batch_size`` crops at a time."""

        def features(images: torch.Tensor) -> np.ndarray:
            chunks = [self.features(model, part) for part in images.split(batch_size)]
            return np.vstack(chunks) if chunks else np.empty((0, len(self.feature_names)))

        attacked = None if attacked_images is None else features(attacked_images)
        return self.fit(features(clean_images), attacked, target_fpr=target_fpr)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """(B,) scores in [0, 1] from raw feature rows."""
        if not self.fitted:
            raise CheckpointError("the tamper scorer is not calibrated; fit or load it first")
        z = self._standardise(self._check_features(features))
        if self.method == "logistic":
            return _sigmoid(z @ self.weights + self.bias)
        signs = np.array([FEATURE_SIGNS[name] for name in self.feature_names], dtype=float)
        oriented = np.where(signs == 0, np.abs(z), z * signs)
        return _sigmoid(oriented.max(axis=1))

    def score(
        self, model: nn.Module, images: torch.Tensor, *, logits: torch.Tensor | None = None
    ) -> np.ndarray:
        """(B,) tamper scores in [0, 1] for a batch of [0, 1] crops (one batched forward).

        Pass the detector's ``logits`` for these crops when the request path has them: it
        saves the forward pass on the crops themselves (about one detector cost).
        """
        return self.score_features(self.features(model, images, logits=logits))

    def score_and_logits(
        self, model: nn.Module, images: torch.Tensor, *, forward: Forward | None = None
    ) -> tuple[np.ndarray, torch.Tensor]:
        """(B,) tamper scores and the detector's (B, K) logits of the same crops, from one
        forward of the crops and their checked copies together (through ``forward`` if given:
        the server's shared batcher, so a frame costs one queued request, not two)."""
        features, logits = tamper_features_and_logits(model, images, self.config, forward=forward)
        return self.score_features(features), logits

    def suspicious(self, scores: np.ndarray) -> np.ndarray:
        """(B,) bool: the scores above the calibrated threshold."""
        return np.asarray(scores) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready calibration, self-describing (features, method, whether calibrated)."""
        if not self.fitted:
            raise CheckpointError("the tamper scorer is not calibrated; nothing to save")
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "calibrated_probability": self.method == "logistic",
            "features": list(self.feature_names),
            "config": self.config.to_dict(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "weights": None if self.weights is None else self.weights.tolist(),
            "bias": self.bias,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TamperScorer:
        """Inverse of ``to_dict``; raises ``CheckpointError`` on a malformed document."""
        try:
            if data["format_version"] != FORMAT_VERSION or data["method"] not in METHODS:
                raise ValueError("unsupported format_version or method")
            scorer = cls(CheckConfig.from_dict(data["config"]))
            if list(data["features"]) != list(scorer.feature_names):
                raise ValueError("feature list does not match the config")
            scorer.method = data["method"]
            scorer.mean = np.asarray(data["mean"], dtype=float)
            scorer.std = np.asarray(data["std"], dtype=float)
            weights = data["weights"]
            scorer.weights = None if weights is None else np.asarray(weights, dtype=float)
            scorer.bias = float(data["bias"])
            scorer.threshold = float(data["threshold"])
            scorer.target_fpr = float(data["target_fpr"])
            scorer.stats = dict(data.get("stats", {}))
            n = len(scorer.feature_names)
            if scorer.mean.shape != (n,) or scorer.std.shape != (n,):
                raise ValueError("mean/std length does not match the features")
            if scorer.method == "logistic" and (scorer.weights is None or scorer.weights.shape != (n,)):
                raise ValueError("weights length does not match the features")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid tamper calibration: {exc}") from exc
        return scorer

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (next to the model card)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TamperScorer:
        """Read a calibration written by ``save``."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read tamper calibration {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"invalid tamper calibration {path}: not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def load_for(cls, model_dir: str | Path, weights_sha256: str) -> TamperScorer | None:
        """``<model_dir>/tamper.json`` if it was fitted on these detector weights, else None.

        A calibration records the sha256 of the weights it was fitted against; one fitted on other
        weights (a retrained detector, a stale file) would flag the wrong frames, so it is ignored
        with a warning and frames get no tamper score until ``unmask tamper fit`` is run again.
        A calibration without the record (written by hand) is trusted as before.
        """
        path = Path(model_dir) / TAMPER_FILENAME
        if not path.exists():
            return None
        scorer = cls.load(path)
        fitted_on = scorer.stats.get("weights_sha256")
        if fitted_on and weights_sha256 and fitted_on != weights_sha256:
            _LOGGER.warning(
                "ignoring %s: fitted on detector weights %s…, these are %s…; run `unmask tamper fit`",
                path,
                str(fitted_on)[:12],
                weights_sha256[:12],
            )
            return None
        return scorer

    def _standardise(self, features: np.ndarray) -> np.ndarray:
        """z-scores against the clean calibration frames."""
        return (features - self.mean) / self.std

    def _check_features(self, features: np.ndarray) -> np.ndarray:
        """Coerce to float64 (N, F) with this config's column count."""
        features = np.asarray(features, dtype=float)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(f"features must have shape (N, {len(self.feature_names)}), got {features.shape}")
        return features
