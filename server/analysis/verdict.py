"""Aggregate per-frame results into the verdict object of the API (shared/DESIGN.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from server.analysis.frames import FrameResult
from server.vision.card import ModelCard

# Fewer face frames than this and a verdict would rest on one or two glimpses: inconclusive.
MIN_FACE_FRAMES = 3
# "tampered" needs a perturbation on at least this many face frames and on this share of them.
# The tamper check's threshold is set per frame (about 1 % false positives on clean crops), so
# a one-frame rule compounds over a video's frames: measured on 24 clean held-out sample clips
# at 2 frames/s, 7 had one flagged frame (mostly the t=0 I-frame every check samples). An attack
# that changes the verdict must drag the mean score across the threshold, which takes more than
# a tenth of the frames unless it can push them far below zero confidence (the headline attack
# perturbs every frame).
MIN_TAMPERED_FRAMES = 2
MIN_TAMPERED_SHARE = 0.1


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
    # Purified scores replace the raw score of frames found perturbed: the raw one is what
    # the attacker chose.
    scores = [
        r.purified_score if (r in suspicious and r.purified_score is not None) else r.score
        for r in face_frames
    ]
    score = sum(scores) / len(scores)  # type: ignore[arg-type]
    manipulated = score >= card.threshold
    agreeing = sum(1 for s in scores if (s >= card.threshold) == manipulated)  # type: ignore[operator]
    verdict["score"] = round(score, 4)
    verdict["confidence"] = round(agreeing / len(scores), 4)
    if is_tampered(len(suspicious), len(face_frames)):
        verdict["label"] = Label.TAMPERED
        reason = (
            f"{len(suspicious)} frame(s) carry what looks like an adversarial perturbation; "
            f"{len(purified)} were purified, and the content then scores "
            f"{'manipulated' if manipulated else 'authentic'}"
        )
        if purify_failed:
            first = next((r.purify_error for r in purify_failed if r.purify_error), "unknown error")
            reason += f"; purification failed for {len(purify_failed)} frame(s) ({first})"
        verdict["reason"] = reason
        verdict["manipulated"] = manipulated
    else:
        verdict["label"] = Label.MANIPULATED if manipulated else Label.AUTHENTIC
        if suspicious:
            verdict["reason"] = (
                f"{len(suspicious)} of {len(face_frames)} face frame(s) looked perturbed, fewer than the "
                f"{MIN_TAMPERED_FRAMES} frames and {MIN_TAMPERED_SHARE:.0%} a tampered verdict needs; "
                "their purified scores are used"
            )
    return verdict


def is_tampered(suspicious: int, face_frames: int) -> bool:
    """Whether enough face frames carry a perturbation for the verdict to say "tampered"."""
    return suspicious >= MIN_TAMPERED_FRAMES and suspicious >= MIN_TAMPERED_SHARE * face_frames
