"""The in-memory band index on its own: candidate choice, replacement by seq, forgetting, merges."""

from __future__ import annotations

import time

import numpy as np

from server.db.frame_index import FrameIndex, Segment, _gather, band_columns
from server.vision.phash import bands

FAR = time.time() + 3600
# Random 64-bit hashes: no two share a 16-bit band.
H = [int(h) for h in np.random.default_rng(0).integers(0, 2**63, size=8, dtype=np.int64)]


def _add(
    index: FrameIndex, check_id: str, hashes: list[int], expires: float = FAR, first_seq: int = 0
) -> None:
    seqs = list(range(first_seq, first_seq + len(hashes)))
    rows = index.rows([check_id] * len(hashes), seqs, hashes)
    index.set_expiry(rows.checks, np.full(len(hashes), expires))
    index.add(rows)


def _ids(index: FrameIndex, query: list[int], limit: int = 16) -> list[str]:
    return [c for c, _, _ in index.candidates(query, time.time(), limit)]


def test_band_columns_split_as_phash_bands() -> None:
    values = [0, 2**64 - 1, 0x0123456789ABCDEF, 0xFEDCBA9876543210]
    columns = band_columns(np.array(values, dtype=np.uint64))
    for k, v in enumerate(values):
        assert tuple(int(c[k]) for c in columns) == bands(v)


def test_gather_concatenates_slices() -> None:
    order = np.arange(100, 120)
    got = _gather(order, np.array([0, 5, 5, 18]), np.array([2, 5, 8, 20]))
    assert got.tolist() == [100, 101, 105, 106, 107, 118, 119]
    assert _gather(order, np.array([3]), np.array([3])).tolist() == []


def test_most_band_hits_first_and_ties_go_to_the_smaller_check_id() -> None:
    index = FrameIndex()
    query = 0x1111_2222_3333_4444
    # One stored frame per check sharing one band with the query; "best" shares all four.
    for k in range(30):
        _add(index, f"c{29 - k:02d}", [0x1111_0000_0000_0000 | (k + 1)])
    _add(index, "zz", [query])
    got = _ids(index, [query], limit=5)
    assert got == ["zz", "c00", "c01", "c02", "c03"]


def test_frames_of_a_check_come_back_whole_and_in_seq_order() -> None:
    index = FrameIndex()
    _add(index, "a", H[:3], first_seq=10)
    [(check, seqs, hashes)] = index.candidates([H[1]], time.time(), 16)
    assert check == "a" and seqs.tolist() == [10, 11, 12] and hashes.tolist() == H[:3]


def test_rows_arriving_again_replace_those_of_the_same_seq() -> None:
    index = FrameIndex()
    _add(index, "a", H[:3])
    _add(index, "a", [H[3]], first_seq=1)  # seq 1 restored, 0 and 2 kept
    [(_, seqs, hashes)] = index.candidates([H[0]], time.time(), 16)
    assert seqs.tolist() == [0, 1, 2] and hashes.tolist() == [H[0], H[3], H[2]]
    assert _ids(index, [H[1]]) == []
    assert len(index) == 3


def test_forgotten_and_expired_checks_are_not_candidates() -> None:
    index = FrameIndex()
    _add(index, "gone", [H[0] | 1 << 63])  # unsigned above 2**63 as well as signed
    _add(index, "old", [H[1]], expires=time.time() - 1)
    _add(index, "kept", [H[2] - 2**63])
    assert _ids(index, [H[0] | 1 << 63, H[1], H[2] + 2**63]) == ["gone", "kept"]
    index.forget("gone")
    index.forget("never-stored")
    assert _ids(index, [H[0] | 1 << 63, H[1], H[2] + 2**63]) == ["kept"]


def test_a_merge_keeps_changes_made_while_it_was_built() -> None:
    index = FrameIndex()
    for name in "abcd":
        _add(index, name, [H["abcd".index(name)]])
    parts = list(index.segments)
    rows = index.live_rows(parts, time.time())  # built "in another thread" from here on
    index.forget("a")
    _add(index, "b", [H[4]])  # b's new rows live in a newer segment
    index.replace(parts, Segment(rows))
    assert len(index.segments) == 2 and index.base is index.segments[0]
    everything = H[:5]
    assert sorted(_ids(index, everything)) == ["b", "c", "d"]
    [(_, _, hashes)] = [c for c in index.candidates(everything, time.time(), 16) if c[0] == "b"]
    assert hashes.tolist() == [H[4]]
    assert len(index) == 3


def test_the_start_up_load_yields_to_rows_stored_meanwhile() -> None:
    index = FrameIndex()
    _add(index, "a", [H[0]])  # stored while the start-up load was read
    index.check_index("c")
    index.forget("c")  # and invalidated meanwhile
    loaded = index.rows(["a", "b", "c"], [0, 0, 0], [H[1], H[2], H[3]])
    index.set_expiry(loaded.checks, np.array([FAR, FAR, FAR]))
    base = Segment(loaded)
    index.install_base(base)
    assert index.segments[0] is base
    assert _ids(index, [H[1]]) == []  # a's old row from the load
    assert _ids(index, [H[0]]) == ["a"] and _ids(index, [H[2]]) == ["b"]
    assert _ids(index, [H[3]]) == []
