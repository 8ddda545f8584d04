"""Confirming near-duplicate candidates, without a database."""

from __future__ import annotations

import numpy as np

from server.db.frame_match import FRAME_MATCH_BITS, candidates, confirm, matched_frames

RNG = np.random.default_rng(9)
STORED = [int(h) for h in RNG.integers(0, 2**63, size=10)]


def _flip_low(h: int, bits: int) -> int:
    return h ^ ((1 << bits) - 1)


def _group(check_id: str, hashes: list[int]) -> tuple[str, np.ndarray, np.ndarray]:
    return check_id, np.arange(len(hashes)), np.array(hashes, dtype=np.uint64)


def test_a_shifted_copy_aligns_within_one_sample_of_slack() -> None:
    # Query frame qi matches stored frame qi + 3, and every other one a sample late (qi + 4).
    seqs = [qi + 3 + (qi % 2) for qi in range(6)]
    assert matched_frames(seqs, list(range(6))) == 6
    # Pairs spread over unrelated offsets do not add up.
    assert matched_frames([0, 5, 9, 2], [0, 1, 2, 3]) == 2


def test_the_hamming_limit_is_inclusive_and_the_best_candidate_wins() -> None:
    near = [_flip_low(h, FRAME_MATCH_BITS) for h in STORED]
    far = [_flip_low(h, FRAME_MATCH_BITS + 1) for h in STORED]
    half = STORED[:5] + [int(h) for h in RNG.integers(0, 2**63, size=5)]
    groups = [_group("far", far), _group("half", half), _group("near", near)]
    found = list(candidates(STORED, groups))
    assert [c[0] for c in found] == ["half", "near"]  # "far" has no frame within the limit
    assert confirm(len(STORED), found) == ("near", 10)
    assert confirm(len(STORED), candidates(STORED, [_group("far", far)])) is None


def test_too_few_matching_frames_are_not_the_same_video() -> None:
    two = STORED[:2] + [int(h) for h in RNG.integers(0, 2**63, size=8)]
    assert confirm(len(STORED), candidates(STORED, [_group("two", two)])) is None
    assert list(candidates(STORED, [])) == []
