"""The SPRT early-verdict rule."""

from __future__ import annotations

import pytest

from server.analysis.sequential import MIN_FRAMES, SequentialTest


def test_clear_manipulated_stream_stops_at_the_minimum() -> None:
    test = SequentialTest(threshold=0.5)
    decisions = [test.update(0.9) for _ in range(MIN_FRAMES + 5)]
    assert decisions.index("manipulated") == MIN_FRAMES - 1


def test_clear_authentic_stream_decides_authentic() -> None:
    test = SequentialTest(threshold=0.5)
    for _ in range(MIN_FRAMES):
        test.update(0.1)
    assert test.decision == "authentic"


def test_mixed_votes_do_not_decide() -> None:
    test = SequentialTest(threshold=0.5)
    for i in range(60):
        test.update(0.9 if i % 2 else 0.1)
    assert test.decision is None


def test_frames_without_faces_are_ignored() -> None:
    test = SequentialTest(threshold=0.5)
    for _ in range(50):
        test.update(None)
    assert test.frames == 0 and test.decision is None


@pytest.mark.parametrize("p_true", [0.2, 0.8])
def test_error_rate_is_near_nominal_on_independent_votes(p_true: float) -> None:
    import random

    rng = random.Random(0)
    wrong = 0
    runs = 400
    for _ in range(runs):
        test = SequentialTest(threshold=0.5)
        while test.decision is None:
            test.update(0.9 if rng.random() < p_true else 0.1)
        truth = "manipulated" if p_true > 0.5 else "authentic"
        wrong += test.decision != truth
    assert wrong / runs <= 0.02
