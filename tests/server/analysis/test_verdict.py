"""Verdict aggregation: labels from per-frame scores, tamper scores and purified scores."""

from __future__ import annotations

import pytest

from server.analysis.frames import FrameResult
from server.analysis.verdict import MIN_TAMPERED_FRAMES, MIN_TAMPERED_SHARE, Label, aggregate, is_tampered
from server.settings import REPO_ROOT
from server.vision.checkpoint import load_card

CARD = load_card(REPO_ROOT / "models" / "default")
TAMPER_THRESHOLD = 0.5


def frames(scores, tampers=None, purified=None) -> list[FrameResult]:
    tampers = tampers or [0.1] * len(scores)
    purified = purified or [None] * len(scores)
    return [
        FrameResult(
            index=i,
            t=i / 2,
            score=s,
            boxes=[[0, 0, 10, 10]] if s is not None else [],
            tamper=tm,
            purified_score=p,
            purify_status=None if p is None else "done",
        )
        for i, (s, tm, p) in enumerate(zip(scores, tampers, purified, strict=True))
    ]


def verdict(results):
    return aggregate(results, CARD, timings={}, tamper_threshold=TAMPER_THRESHOLD)


def test_clean_scores_decide_authentic_and_manipulated() -> None:
    assert verdict(frames([0.1] * 6))["label"] == Label.AUTHENTIC
    assert verdict(frames([0.99] * 6))["label"] == Label.MANIPULATED


def test_too_few_face_frames_is_inconclusive() -> None:
    out = verdict(frames([0.9, None, None, 0.9]))
    assert out["label"] == Label.INCONCLUSIVE and "no usable face" in out["reason"]


def test_perturbed_frames_make_it_tampered_and_purified_scores_decide_the_content() -> None:
    results = frames([0.1] * 6, tampers=[0.9] * 6, purified=[0.99] * 6)
    out = verdict(results)
    assert out["label"] == Label.TAMPERED
    assert out["manipulated"] is True and out["score"] == pytest.approx(0.99)
    assert out["tamper"]["suspicious_frames"] == 6 and out["tamper"]["purified_frames"] == 6


def test_one_flagged_frame_is_not_enough_for_tampered() -> None:
    """The per-frame false positives of the tamper check must not label clean videos tampered."""
    results = frames([0.1] * 6, tampers=[0.9] + [0.1] * 5, purified=[0.12] + [None] * 5)
    out = verdict(results)
    assert out["label"] == Label.AUTHENTIC
    assert out["tamper"]["suspicious_frames"] == 1
    assert "1 of 6 face frame(s) looked perturbed" in out["reason"]


def test_flagged_frames_below_the_share_of_a_long_video_do_not_make_it_tampered() -> None:
    n = 60
    flagged = int(MIN_TAMPERED_SHARE * n) - 1
    results = frames([0.1] * n, tampers=[0.9] * flagged + [0.1] * (n - flagged))
    assert verdict(results)["label"] == Label.AUTHENTIC
    results = frames([0.1] * n, tampers=[0.9] * (flagged + 1) + [0.1] * (n - flagged - 1))
    assert verdict(results)["label"] == Label.TAMPERED


@pytest.mark.parametrize(
    ("suspicious", "face_frames", "expected"),
    [
        (0, 6, False),
        (1, 6, False),
        (MIN_TAMPERED_FRAMES, 6, True),
        (2, 30, False),
        (3, 30, True),
        (6, 6, True),
    ],
)
def test_is_tampered(suspicious: int, face_frames: int, expected: bool) -> None:
    assert is_tampered(suspicious, face_frames) is expected
