"""Aggregate per-frame results into the verdict object of the API (shared/DESIGN.md)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from server.analysis.frames import FrameResult
from server.vision.card import ModelCard

# Fewer face frames than this and a verdict would rest on one or two glimpses: inconclusive.
MIN_FACE_FRAMES = 3
# "tampered" needs more flagged face frames than a clean video shows by chance. The tamper check's
# threshold is set per frame (1 % false positives on its training crops, 5.0 % measured on clean
# held-out crops, docs/ROBUSTNESS.md), and its alarms compound over a video's frames: with the
# earlier rule (2 frames and 10 % of them), 12.5 % of the 24 clean held-out clips and 2 of 6 clean
# 6-s sample clips would have been labelled tampered. Now the count must be one that a clean
# video, flagging each frame independently at CLEAN_FRAME_FPR, reaches with probability below
# TAMPERED_ALPHA: 3 of 6 frames, 4 of 12, 13 of 120 (10.8 %). An attack that changes the verdict
# must drag the mean score across the threshold, which takes more than a tenth of a long video's
# frames; fewer flagged frames are still purified and their purified scores used, so the label
# is not what stops such an attack (the headline attack perturbs every frame).
CLEAN_FRAME_FPR = 0.05
TAMPERED_ALPHA = 0.01
MIN_TAMPERED_FRAMES = 2


class Label:
    """Verdict labels."""

    AUTHENTIC = "authentic"
    MANIPULATED = "manipulated"
    TAMPERED = "tampered"
    INCONCLUSIVE = "inconclusive"
    FAILED = "failed"


def model_info(card: ModelCard) -> dict[str, Any]:
    """The ``model`` block of a verdict."""
    return {
        "id": card.id,
        "version": card.version,
        "architecture": card.architecture,
        "demo": card.demo,
        "threshold": card.threshold,
    }


def aggregate(
    results: Sequence[FrameResult],
    card: ModelCard,
    *,
    timings: dict[str, float],
    media: dict[str, Any] | None = None,
    truncated: bool = False,
    tamper_threshold: float | None = None,
    early_stop: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the verdict object from every sampled frame's result."""
    face_frames = [r for r in results if r.score is not None]
    suspicious = [
        r
        for r in results
        if r.tamper is not None and tamper_threshold is not None and r.tamper > tamper_threshold
    ]
    purified = [r for r in suspicious if r.purified_score is not None]
    purify_failed = [r for r in suspicious if r.purify_status == "failed"]
    tampers = [r.tamper for r in results if r.tamper is not None]
    # Captured frames get the tamper check only inside lossless patches: the frames it saw are
    # the ones a clean video's chance flags are counted over.
    checked = sum(1 for r in face_frames if r.tamper is not None)
    verdict: dict[str, Any] = {
        "label": Label.INCONCLUSIVE,
        "score": None,
        "confidence": None,
        "reason": None,
        "frames_analyzed": len(results),
        "faces": {
            "frames_with_faces": len(face_frames),
            "max_per_frame": max((len(r.boxes) for r in results), default=0),
            "total": sum(len(r.boxes) for r in results),
        },
        "tamper": {
            "checked_frames": checked,
            "suspicious_frames": len(suspicious),
            "purified_frames": len(purified),
            "purify_failed": len(purify_failed),
            "max_score": max(tampers) if tampers else None,
            "threshold": tamper_threshold,
        },
        "timeline": [r.to_event() for r in results],
        "model": model_info(card),
        "media": media or {},
        "truncated": truncated,
        "early_stop": early_stop,
        "cached": False,
        "keys": [],
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "created_at": datetime.now(UTC).isoformat(),
    }
    if not results:
        verdict["reason"] = "no frames could be decoded from the video"
        return verdict
    if len(face_frames) < MIN_FACE_FRAMES:
        verdict["reason"] = (
            f"no usable face: faces were found in {len(face_frames)} of {len(results)} sampled frames "
            f"(at least {MIN_FACE_FRAMES} are needed)"
        )
        return verdict
    tampered = is_tampered(len(suspicious), checked)
    # Purified scores replace the raw score of frames found perturbed: the raw one is what the
    # attacker chose. In a video found perturbed, so may be the score of a frame the tamper check
    # did not see (a captured frame outside its lossless patch): the content is judged on the
    # frames it saw.
    judged = [r for r in face_frames if r.tamper is not None] if tampered else face_frames
    scores = [
        r.purified_score if (r in suspicious and r.purified_score is not None) else r.score for r in judged
    ]
    score = sum(scores) / len(scores)  # type: ignore[arg-type]
    manipulated = score >= card.threshold
    agreeing = sum(1 for s in scores if (s >= card.threshold) == manipulated)  # type: ignore[operator]
    verdict["score"] = round(score, 4)
    verdict["confidence"] = round(agreeing / len(scores), 4)
    if tampered:
        verdict["label"] = Label.TAMPERED
        reason = (
            f"{len(suspicious)} frame(s) carry what looks like an adversarial perturbation; "
            f"{len(purified)} were purified, and the content then scores "
            f"{'manipulated' if manipulated else 'authentic'}"
        )
        if len(judged) < len(face_frames):
            reason += f" (judged on the {len(judged)} of {len(face_frames)} face frames the check saw)"
        if purify_failed:
            first = next((r.purify_error for r in purify_failed if r.purify_error), "unknown error")
            reason += f"; purification failed for {len(purify_failed)} frame(s) ({first})"
        verdict["reason"] = reason
        verdict["manipulated"] = manipulated
    else:
        verdict["label"] = Label.MANIPULATED if manipulated else Label.AUTHENTIC
        if suspicious:
            verdict["reason"] = (
                f"{len(suspicious)} of {checked} checked face frame(s) looked perturbed, fewer than the "
                f"{tampered_min_frames(checked)} a tampered verdict needs (clean videos show "
                "a few such frames by chance); their purified scores are used"
            )
    return verdict


def is_tampered(suspicious: int, face_frames: int) -> bool:
    """Whether enough face frames carry a perturbation for the verdict to say "tampered"."""
    return suspicious >= tampered_min_frames(face_frames)


@functools.lru_cache(maxsize=1024)
def tampered_min_frames(face_frames: int) -> int:
    """The fewest flagged frames of ``face_frames`` that a clean video reaches with probability
    below TAMPERED_ALPHA (binomial tail at CLEAN_FRAME_FPR), and at least MIN_TAMPERED_FRAMES."""
    n, p = face_frames, CLEAN_FRAME_FPR
    tail = 1.0  # P(X >= k), from k = 0 up
    for k in range(n + 1):
        if tail < TAMPERED_ALPHA:
            return max(k, MIN_TAMPERED_FRAMES)
        tail -= _binomial_pmf(n, k, p)
    return max(n + 1, MIN_TAMPERED_FRAMES)  # a very short video: not even all its frames are that rare


def _binomial_pmf(n: int, k: int, p: float) -> float:
    # In logs: (1 - p) ** n underflows for the longest videos (3,600 frames).
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))
