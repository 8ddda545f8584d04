"""Early verdicts: a sequential probability ratio test (Wald's SPRT) over face-frame votes.

Each frame with a face votes "manipulated" when its score is at or above the detector's
threshold. H0: a vote is manipulated with probability P_AUTHENTIC (an authentic video, with
the detector's false positives); H1: with probability P_MANIPULATED. The test stops as soon as
the log-likelihood ratio leaves (log B, log A), with nominal error rates ALPHA (calling an
authentic video manipulated) and BETA (the reverse). Frames of one video are correlated, so
the nominal rates assume more independence than exists; MIN_FRAMES and the wide gap between
the hypotheses are the margin for that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ALPHA = 0.01
BETA = 0.01
P_AUTHENTIC = 0.2
P_MANIPULATED = 0.8

# Never decide on fewer face frames than this (5 s of video at the default 2 frames/s).
MIN_FRAMES = 10


@dataclass
class SequentialTest:
    """Feed per-frame scores with ``update``; ``decision`` is set once the test stops."""

    threshold: float
    alpha: float = ALPHA
    beta: float = BETA
    p0: float = P_AUTHENTIC
    p1: float = P_MANIPULATED
    min_frames: int = MIN_FRAMES
    llr: float = 0.0
    frames: int = 0
    decision: str | None = None
    _upper: float = field(init=False)
    _lower: float = field(init=False)

    def __post_init__(self) -> None:
        self._upper = math.log((1 - self.beta) / self.alpha)
        self._lower = math.log(self.beta / (1 - self.alpha))

    def update(self, score: float | None) -> str | None:
        """Add one frame's score (None: no face, ignored); returns the decision once reached."""
        if self.decision is not None or score is None:
            return self.decision
        vote = score >= self.threshold
        self.frames += 1
        self.llr += math.log(self.p1 / self.p0) if vote else math.log((1 - self.p1) / (1 - self.p0))
        if self.frames >= self.min_frames:
            if self.llr >= self._upper:
                self.decision = "manipulated"
            elif self.llr <= self._lower:
                self.decision = "authentic"
        return self.decision

    def summary(self) -> dict[str, float | int | str | None]:
        """What the verdict reports about the early stop."""
        return {
            "decision": self.decision,
            "face_frames": self.frames,
            "nominal_error_rate": max(self.alpha, self.beta),
            "test": f"SPRT p0={self.p0} p1={self.p1} alpha={self.alpha} beta={self.beta}",
        }
