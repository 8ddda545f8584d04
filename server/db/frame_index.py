"""Near-duplicate candidates from memory: the frame_hashes rows of one model, in numpy arrays.

The same band look-up as the database's (server/db/cache.py): a stored frame is a candidate when
one of its four 16-bit bands equals a query frame's; the MAX_CANDIDATES checks with the most band
hits (ties: smaller check id) come back with all their frames. Here a band look-up is a binary
table read instead of an index seek and a round trip.

Rows arrive in batches (server/db/frame_mirror.py reads them) and become immutable segments:
one large one from start-up, small ones after. A check's current rows are all in one segment
(its owner); rows of a check that arrive again (a re-stored verdict, or the rest of a batch split
by a read limit) replace the old rows of the same ``seq`` and move, with the old rows they keep,
to the new segment. Rows of a check in any other segment are dead. Per-check state (owner,
expiry, id) lives in arrays indexed by check, so the look-up's filters read small arrays, and
the checks of each band key are one slice of a table (no search at all). No
Python object is kept per row or per check beyond the id string: a million tuples or boxed
ints would be walked by every full garbage collection (pauses of tens of ms in the server).
Nothing here touches a database, so it is tested and timed on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from server.vision.phash import BAND_BITS, BANDS

_U64 = (1 << 64) - 1
_BAND_MASK = np.uint64((1 << BAND_BITS) - 1)
_SHIFTS = [np.uint64(BAND_BITS * (BANDS - 1 - i)) for i in range(BANDS)]
MASK = (1 << BAND_BITS) - 1
_BANDS = [(band, BAND_BITS * (BANDS - 1 - band)) for band in range(BANDS)]
# Band keys: band number << BAND_BITS | band value.
KEYS = BANDS << BAND_BITS

# Check ids are compared as bytes for the tie-break (checks.id is a String(32); ids are ASCII).
ID_BYTES = 32

# owner values that name no segment
_NEVER, _FORGOTTEN = -2, -1

# Small segments from refreshes are merged into one once there are more than this many (each
# costs its own table reads and filters in every look-up).
MAX_SMALL_SEGMENTS = 8

_serials = itertools.count()


def band_columns(hashes: np.ndarray) -> list[np.ndarray]:
    """The four bands of each unsigned 64-bit hash, as phash.bands orders them."""
    return [((hashes >> s) & _BAND_MASK).astype(np.uint16) for s in _SHIFTS]


def band_keys(hashes: np.ndarray) -> np.ndarray:
    """Each hash's four bands as keys ``band << 16 | value``, band by band (4 × len(hashes))."""
    return np.concatenate(
        [
            np.uint32(band << BAND_BITS) | column.astype(np.uint32)
            for band, column in enumerate(band_columns(hashes))
        ]
    )


@dataclass(frozen=True)
class Rows:
    """A batch of frame_hashes rows, one array per column (hashes unsigned)."""

    checks: np.ndarray  # int32, index into FrameIndex.ids
    seqs: np.ndarray  # int32
    hashes: np.ndarray  # uint64

    def take(self, order: np.ndarray) -> Rows:
        return Rows(self.checks[order], self.seqs[order], self.hashes[order])

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        return Rows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Rows)))

    def __len__(self) -> int:
        return len(self.checks)


class Segment:
    """Rows sorted by (check, seq), with a table from band key to the checks holding it."""

    def __init__(self, rows: Rows) -> None:
        self.serial = next(_serials)
        self.rows = rows.take(np.lexsort((rows.seqs, rows.checks)))
        # All four bands in one table: key = band number << 16 | band value; the rows of key k
        # are band_checks[offsets[k]:offsets[k + 1]] (their checks), so a look-up is two reads
        # per key, no search.
        keys = band_keys(self.rows.hashes)
        self.band_checks = np.tile(self.rows.checks, BANDS)[np.argsort(keys, kind="stable")]
        self.offsets = np.concatenate(([0], np.cumsum(np.bincount(keys, minlength=KEYS))))
        self.checks, starts = np.unique(self.rows.checks, return_index=True)
        self.starts = starts.astype(np.int64)
        self.ends = np.append(self.starts[1:], len(self.rows))

    def span(self, check: int) -> tuple[int, int]:
        """The rows of ``check`` (which must be in this segment): start and end."""
        # The needle in the array's own type: a Python int made numpy cast the whole array.
        k = int(self.checks.searchsorted(self.checks.dtype.type(check)))
        return int(self.starts[k]), int(self.ends[k])

    def __len__(self) -> int:
        return len(self.rows)


def _gather(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``values[lo[k]:hi[k]]`` for every k, concatenated, without a Python loop."""
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return values[:0]
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return values[starts + np.arange(total)]


class FrameIndex:
    """The frame hashes of one model's cached verdicts, searchable by band."""

    def __init__(self) -> None:
        self.ids: list[str] = []  # check number → check id
        self.index_of: dict[str, int] = {}
        self.segments: list[Segment] = []
        self.base: Segment | None = None  # the start-up load (and later merges into it)
        self.by_serial: dict[int, Segment] = {}
        # Per check number: the owning segment's serial, its expiry (Unix s), its id as bytes.
        self.owner = np.full(1024, _NEVER, dtype=np.int64)
        self.expires = np.zeros(1024, dtype=np.float64)
        self.id_bytes = np.zeros(1024, dtype=f"S{ID_BYTES}")

    def __len__(self) -> int:
        """Rows of the current (live) frames."""
        total = 0
        for s in self.segments:
            live = self.owner[s.checks] == s.serial
            total += int((s.ends[live] - s.starts[live]).sum())
        return total

    def check_index(self, check_id: str) -> int:
        index = self.index_of.get(check_id)
        if index is None:
            index = self.index_of[check_id] = len(self.ids)
            self.ids.append(check_id)
            if index >= len(self.owner):
                grow = len(self.owner)
                self.owner = np.append(self.owner, np.full(grow, _NEVER, dtype=np.int64))
                self.expires = np.append(self.expires, np.zeros(grow))
                self.id_bytes = np.append(self.id_bytes, np.zeros(grow, dtype=self.id_bytes.dtype))
            self.id_bytes[index] = check_id.encode()
        return index

    def rows(self, check_ids: Sequence[str], seqs: Sequence[int], hashes: Sequence[int] | np.ndarray) -> Rows:
        """A batch in this index's terms (hashes: Python ints signed or unsigned, or uint64)."""
        checks = np.empty(len(check_ids), dtype=np.int32)
        last, number = None, 0
        for k, check_id in enumerate(check_ids):  # rows come grouped by check: one look-up each
            if check_id != last:
                last, number = check_id, self.check_index(check_id)
            checks[k] = number
        return Rows(
            checks,
            np.asarray(seqs, dtype=np.int32),
            hashes
            if isinstance(hashes, np.ndarray)
            else np.fromiter((h & _U64 for h in hashes), dtype=np.uint64, count=len(hashes)),
        )

    def set_expiry(self, checks: np.ndarray, expires: np.ndarray) -> None:
        """Record when each check's frames expire (all rows of a check share it)."""
        self.expires[checks] = expires

    def add(self, rows: Rows) -> None:
        """Index a batch; a check seen before keeps its old frames only for ``seq``s not in it."""
        if not len(rows):
            return
        carried: list[Rows] = []
        for check in np.unique(rows.checks).tolist():
            old = self.by_serial.get(int(self.owner[check]))
            if old is None:
                continue
            start, end = old.span(check)
            kept = np.arange(start, end)
            kept = kept[~np.isin(old.rows.seqs[kept], rows.seqs[rows.checks == check])]
            carried.append(old.rows.take(kept))
        segment = Segment(Rows.concat([rows, *carried]) if carried else rows)
        self._register(segment)
        self.owner[segment.checks] = segment.serial
        self.segments.append(segment)

    def forget(self, check_id: str) -> None:
        """Drop a check's frames (its verdict was invalidated)."""
        check = self.index_of.get(check_id)
        if check is not None:
            self.owner[check] = _FORGOTTEN

    def install_base(self, base: Segment) -> None:
        """Put the start-up load first; checks stored or forgotten meanwhile keep that state."""
        self._register(base)
        unseen = base.checks[self.owner[base.checks] == _NEVER]
        self.owner[unseen] = base.serial
        self.segments.insert(0, base)
        self.base = base

    def small_segments(self) -> list[Segment]:
        """Segments other than the base, oldest first."""
        return [s for s in self.segments if s is not self.base]

    def live_rows(self, segments: Sequence[Segment], now: float) -> Rows:
        """The current, unexpired rows of ``segments``, for one merged segment."""
        parts = []
        for s in segments:
            checks = s.rows.checks
            parts.append(
                s.rows.take(np.flatnonzero((self.owner[checks] == s.serial) & (self.expires[checks] > now)))
            )
        return Rows.concat(parts)

    def replace(self, old: list[Segment], merged: Segment) -> None:
        """Swap ``old`` segments for ``merged``, built from their live rows (see live_rows).

        Checks whose rows left ``old`` while ``merged`` was being built (in another thread) stay
        where they went: only checks still owned by ``old`` move to ``merged``.
        """
        self._register(merged)
        serials = np.array([s.serial for s in old])
        moving = merged.checks[np.isin(self.owner[merged.checks], serials)]
        self.owner[moving] = merged.serial
        position = self.segments.index(old[0])
        self.segments = [s for s in self.segments if s not in old]
        self.segments.insert(position, merged)
        for s in old:
            del self.by_serial[s.serial]
        if self.base is None or self.base in old:
            self.base = merged

    def _register(self, segment: Segment) -> None:
        self.by_serial[segment.serial] = segment

    def candidates(
        self, unsigned: Sequence[int], now: float, limit: int
    ) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Up to ``limit`` checks with the most band hits: (check id, seqs, unsigned hashes).

        As the database's candidate query: current, unexpired rows sharing a band value with a
        query frame, each band hit counted once; most hits first, ties by check id.
        """
        keys = np.array(
            sorted({band << BAND_BITS | (h >> shift) & MASK for h in unsigned for band, shift in _BANDS}),
            dtype=np.int64,
        )
        hits: list[np.ndarray] = []
        for segment in self.segments:
            checks = _gather(segment.band_checks, segment.offsets[keys], segment.offsets[keys + 1])
            hits.append(checks[self.owner[checks] == segment.serial])
        checks = np.concatenate(hits) if hits else np.empty(0, dtype=np.int32)
        checks = checks[self.expires[checks] > now]
        if not len(checks):
            return []
        checks, counts = np.unique(checks, return_counts=True)
        chosen = checks[np.lexsort((self.id_bytes[checks], -counts))[:limit]]
        out = []
        for check in chosen.tolist():
            segment = self.by_serial[int(self.owner[check])]
            start, end = segment.span(check)
            out.append((self.ids[check], segment.rows.seqs[start:end], segment.rows.hashes[start:end]))
        return out
