"""Confirming near-duplicate candidates: Hamming distance per frame, then alignment over the sequence.

Shared by the three look-up paths (the SQLite query, the PostgreSQL statement, which counts the
bits itself and sends matching pairs, and the in-memory index); no database here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

# A frame of a re-encode / resize / small crop stays within this many of 64 bits of the
# original (measured: re-encodes 0–2, a 4 % crop 4–14); unrelated frames differ by ~32.
FRAME_MATCH_BITS = 12

# A candidate is the same video when at least this share of the overlapping query frames
# match, and at least MIN_MATCHED_FRAMES do.
MIN_MATCH_FRACTION = 0.6
MIN_MATCHED_FRAMES = 3

# Sampling phase differs between encodes (and a trimmed copy starts mid-GOP): a query frame
# may meet its original one sample early or late.
ALIGN_SLACK = 1

# A candidate as the confirmation sees it: check id, how many frames it has stored, and its
# matching (stored seq, query frame) pairs, ordered by query frame, then seq.
Candidate = tuple[str, int, Sequence[int], Sequence[int]]


def matched_frames(seqs: Sequence[int], qis: Sequence[int]) -> int:
    """Most query frames matching a stored sequence under one offset (± ALIGN_SLACK).

    ``(seqs[k], qis[k])`` are the pairs of stored frame ``seq`` and query frame ``qi`` within
    FRAME_MATCH_BITS of each other, ordered by ``qi`` then ``seq``. Offsets are voted for by these
    pairs first, so only plausible alignments are scored (a long stored video has thousands of
    possible offsets); ties in the vote go to the pair met first in that order.
    """
    pairs = set(zip(seqs, qis, strict=True))
    votes = Counter(sq - qi for sq, qi in zip(seqs, qis, strict=True))
    frames = list(dict.fromkeys(qis))
    slack = range(-ALIGN_SLACK, ALIGN_SLACK + 1)
    best = 0
    for offset, _ in votes.most_common(8):
        matched = sum(1 for qi in frames if any((qi + offset + d, qi) in pairs for d in slack))
        best = max(best, matched)
    return best


def confirm(n_query: int, candidates: Iterable[Candidate]) -> tuple[str, int] | None:
    """The candidate (check id, matched frames) that is the same video, best match first.

    ``candidates`` come best band-hit counts first; among equal matches the earlier one wins.
    """
    best: tuple[int, str] | None = None
    for check_id, size, seqs, qis in candidates:
        need = max(MIN_MATCHED_FRAMES, MIN_MATCH_FRACTION * min(n_query, size))
        # A query frame that matches none of the candidate's frames cannot count under any
        # alignment, so most candidates are dismissed before the vote.
        most = len(set(qis))
        if most < need or (best is not None and most <= best[0]):
            continue
        matched = matched_frames(seqs, qis)
        if matched >= need and (best is None or matched > best[0]):
            best = (matched, check_id)
    return None if best is None else (best[1], best[0])


# A candidate's stored frames: check id, seqs and unsigned hashes, seqs ascending.
Frames = tuple[str, np.ndarray, np.ndarray]


def candidates(unsigned: list[int], groups: Sequence[Frames]) -> Iterable[Candidate]:
    """The candidates worth confirming, with their frames matching a query frame.

    As the PostgreSQL query: a candidate needs MIN_MATCHED_FRAMES query frames with a stored frame
    within FRAME_MATCH_BITS before its alignment is voted on.
    """
    if not groups:
        return
    query = np.array(unsigned, dtype=np.uint64)
    stored = np.concatenate([g[2] for g in groups])
    # Hamming distance of every query frame to every candidate frame in one pass.
    match = np.bitwise_count(query[:, None] ^ stored[None, :]) <= FRAME_MATCH_BITS
    sizes = [len(g[1]) for g in groups]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
    reachable = np.logical_or.reduceat(match, starts, axis=1).sum(axis=0).tolist()
    for (check_id, seqs, _), start, size, most in zip(groups, starts.tolist(), sizes, reachable, strict=True):
        if most >= MIN_MATCHED_FRAMES:
            qis, js = np.nonzero(match[:, start : start + size])  # row-major: by query frame, then seq
            yield check_id, size, seqs[js].tolist(), qis.tolist()
