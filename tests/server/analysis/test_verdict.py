"""Verdict aggregation: labels from per-frame scores, tamper scores and purified scores."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from server.analysis.frames import FrameResult
from server.analysis.verdict import (
    CLEAN_FRAME_FPR,
    TAMPERED_ALPHA,
    Label,
    aggregate,
    is_tampered,
    tampered_min_frames,
)
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
    assert "1 of 6 checked face frame(s) looked perturbed" in out["reason"]


def test_the_flag_count_is_judged_among_the_frames_the_tamper_check_saw() -> None:
    """Captured frames without a lossless patch get no tamper score; the count a tampered verdict
    needs is the one for the checked frames, not for every face frame."""
    n, checked = 60, 6
    need = tampered_min_frames(checked)
    assert need < tampered_min_frames(n)
    tampers = [0.9] * need + [0.1] * (checked - need) + [None] * (n - checked)
    out = verdict(
        [
            FrameResult(index=i, t=i / 2, score=0.1, boxes=[[0, 0, 10, 10]], tamper=tm)
            for i, tm in enumerate(tampers)
        ]
    )
    assert out["tamper"]["checked_frames"] == checked
    assert out["label"] == Label.TAMPERED, out["reason"]


def test_a_tampered_video_is_judged_on_the_frames_the_tamper_check_saw() -> None:
    """An unchecked frame (captured, outside its lossless patch) of a perturbed video keeps the
    score the attacker chose; it must not pull the purified content back to authentic."""
    results = frames([0.01, 0.1, 0.1, 0.1, 0.1, 0.1], tampers=[0.9] * 6, purified=[None] + [0.86] * 5)
    results[0].tamper = None
    out = verdict(results)
    assert out["label"] == Label.TAMPERED
    assert out["manipulated"] is True and out["score"] == pytest.approx(0.86)
    assert "judged on the 5 of 6 face frames the check saw" in out["reason"]


def test_flagged_frames_below_the_count_of_a_long_video_do_not_make_it_tampered() -> None:
    n = 60
    need = tampered_min_frames(n)
    results = frames([0.1] * n, tampers=[0.9] * (need - 1) + [0.1] * (n - need + 1))
    out = verdict(results)
    assert out["label"] == Label.AUTHENTIC
    assert f"fewer than the {need} a tampered verdict needs" in out["reason"]
    results = frames([0.1] * n, tampers=[0.9] * need + [0.1] * (n - need))
    assert verdict(results)["label"] == Label.TAMPERED


@pytest.mark.parametrize(
    ("suspicious", "face_frames", "expected"),
    [
        (0, 6, False),
        (1, 6, False),
        (2, 6, False),  # 2 of 6 happen to 3.3 % of clean 6-frame clips at a 5 % per-frame rate
        (3, 6, True),
        (6, 6, True),
        (3, 12, False),
        (4, 12, True),
        (12, 120, False),
        (13, 120, True),
        (1, 1, False),
    ],
)
def test_is_tampered(suspicious: int, face_frames: int, expected: bool) -> None:
    assert is_tampered(suspicious, face_frames) is expected


def _exact_tail(n: int, k: int) -> Fraction:
    """P(X >= k) for X ~ Binomial(n, CLEAN_FRAME_FPR), in exact rational arithmetic."""
    p = Fraction(CLEAN_FRAME_FPR).limit_denominator(1000)
    return sum((Fraction(math.comb(n, j)) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1)), Fraction(0))


@pytest.mark.parametrize("n", [3, 6, 12, 30, 120, 400])
def test_the_count_is_the_smallest_a_clean_video_reaches_by_chance_less_than_alpha(n: int) -> None:
    k = tampered_min_frames(n)
    assert _exact_tail(n, k) < TAMPERED_ALPHA
    if k > 2:
        assert _exact_tail(n, k - 1) >= TAMPERED_ALPHA


def test_the_longest_videos_get_a_count_near_their_expected_false_alarms() -> None:
    # 3,600 frames: 180 expected by chance at 5 %, sd 13; (1 - p) ** n alone would underflow.
    assert 180 < tampered_min_frames(3600) < 180 + 4 * 13
