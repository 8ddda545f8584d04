"""Keeps a FrameIndex (server/db/frame_index.py) in step with the frame_hashes table, for one model.

The database stays the record: verdicts and their frame hashes are written there first, and a
hit found in memory is confirmed there before it is served (server/db/cache.py). The mirror
only has to be complete enough that a miss is rarely wrong:

- start-up reads the model's unexpired rows in chunks; until then look-ups use the database;
- this process's own stores are added the moment they commit;
- every REFRESH_S it reads the rows other processes added. Ids are handed out before commit, so a
  row can commit below ids already read: each refresh reads again from the highest id seen
  REREAD_S ago and skips ids it holds;
- rows removed by another process (an invalidation) are found when a look-up confirms its hit.

A miss the mirror gets wrong costs a check that runs again instead of being answered from
cache; it never serves a verdict the database no longer holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection

from server.db.frame_index import MAX_SMALL_SEGMENTS, FrameIndex, Rows, Segment

log = logging.getLogger(__name__)

T = TypeVar("T")
Reader = Callable[[Callable[[Connection], T]], Awaitable[T]]

REFRESH_S = 1.0
REREAD_S = 30.0
# Rows per read at start-up; the rows are turned into arrays between reads.
LOAD_CHUNK = 50_000
# How far below the last id of the start-up load the first refreshes (for REREAD_S) read again.
LOAD_TAIL_IDS = 5_000
# Small segments holding fewer rows than this are merged on the event loop (a few ms); larger
# merges build their segment in a thread.
INLINE_MERGE_ROWS = 20_000

# Rows of the model after an id, oldest first, as columns. PostgreSQL aggregates them into
# arrays (asyncpg decodes an array in C, a row at a time in Python); SQLite's rows come from the
# plain driver on a reader thread (``+model_ref`` keeps SQLite on the id range: with the band
# indexes it read every row of the model and sorted them, for each chunk). Both give expiry as
# Unix seconds.
_PG_ROWS_SQL = """
SELECT array_agg(id ORDER BY id), array_agg(check_id ORDER BY id), array_agg(seq ORDER BY id),
       array_agg(phash ORDER BY id), array_agg(extract(epoch FROM expires_at)::float8 ORDER BY id)
  FROM (SELECT id, check_id, seq, phash, expires_at FROM frame_hashes
         WHERE model_ref = $1 AND id > $2 AND expires_at > now() ORDER BY id LIMIT $3) AS t"""
_SQLITE_ROWS_SQL = """
SELECT id, check_id, seq, phash, (julianday(expires_at) - 2440587.5) * 86400.0 FROM frame_hashes
 WHERE +model_ref = ? AND id > ? AND julianday(expires_at) > julianday('now') ORDER BY id LIMIT ?"""

# What a read returns: ids, check ids, seqs, unsigned hashes, expiry.
Columns = tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]


def _columns(ids, check_ids, seqs, hashes, expires) -> Columns:  # type: ignore[no-untyped-def]
    return (
        np.asarray(ids, dtype=np.int64),
        list(check_ids),
        np.asarray(seqs, dtype=np.int32),
        np.asarray(hashes, dtype=np.int64).view(np.uint64),
        np.asarray(expires, dtype=np.float64),
    )


class FrameMirror:
    """The frame hashes of ``ref``'s cached verdicts, in memory, refreshed from the database."""

    def __init__(self, read: Reader, dialect: str, ref: str, max_rows: int) -> None:
        self.read = read
        self.dialect = dialect
        self.ref = ref
        self.max_rows = max_rows
        self.index = FrameIndex()
        self.ready = False
        self.disabled: str | None = None
        self.high = 0  # highest id read
        self.held: set[int] = set()  # ids above the re-read point that are indexed already
        self.marks: deque[tuple[float, int]] = deque()  # (monotonic time, high then)
        self.lock = asyncio.Lock()
        self.answered = 0  # look-ups answered from memory (server/db/cache.py counts them)
        self.task: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "rows": len(self.index),
            "segments": len(self.index.segments),
            "answered": self.answered,
        } | ({"disabled": self.disabled} if self.disabled else {})

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"frame-mirror {self.ref}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            await self.load()
            while not self.disabled:
                await asyncio.sleep(REFRESH_S)
                try:
                    await self.refresh()
                except Exception:  # a database hiccup: the next refresh reads the same rows
                    log.warning("frame mirror refresh failed", exc_info=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._disable(f"{type(exc).__name__}: {exc}"[:300])
            log.exception("frame mirror stopped; near-duplicate look-ups use the database")

    async def load(self) -> None:
        """Read every unexpired row of the model, then serve look-ups from memory."""
        async with self.lock:
            parts, loaded = [], []
            total = 0
            while True:
                columns = await self._read_after(self.high, LOAD_CHUNK)
                if columns is None:
                    break
                ids, rows = columns[0], self._rows(columns)
                parts.append(rows)
                loaded.append(ids)
                total += len(rows)
                self.high = max(self.high, int(ids[-1]))
                if total > self.max_rows:
                    self._disable(f"more than {self.max_rows} frame hashes (cache_index_max_rows)")
                    return
                if len(ids) < LOAD_CHUNK:
                    break
            if parts:
                base = await asyncio.to_thread(Segment, Rows.concat(parts))
                self.index.install_base(base)
                # For REREAD_S the refreshes read again from LOAD_TAIL_IDS below the last id
                # loaded (rows that commit late land there); the loaded ones are held, so skipped.
                low = max(0, self.high - LOAD_TAIL_IDS)
                every = np.concatenate(loaded)
                self.held.update(every[every > low].tolist())
                self.marks.append((time.monotonic(), low))
            self.marks.append((time.monotonic(), self.high))
            self.ready = True

    async def refresh(self) -> None:
        """Index rows committed since the last read (and ones that committed below it)."""
        async with self.lock:
            now = time.monotonic()
            # Read again from the highest id seen REREAD_S ago (or as long ago as known).
            while len(self.marks) > 1 and self.marks[1][0] <= now - REREAD_S:
                self.marks.popleft()
            after = self.marks[0][1] if self.marks else self.high
            self.marks.append((now, self.high))
            self.held = {i for i in self.held if i > after}
            columns = await self._read_after(after, None)
            if columns is None:
                return
            ids = columns[0].tolist()
            self.high = max(self.high, ids[-1])
            # Rows read again (held) are skipped before they are numbered or their expiry set.
            keep = np.fromiter((i not in self.held for i in ids), dtype=bool, count=len(ids))
            if not keep.any():
                return
            self.held.update(i for i, k in zip(ids, keep.tolist(), strict=True) if k)
            self.index.add(self._rows(columns, keep))
            await self._compact()

    def add_local(
        self, ids: list[int], check_id: str, seqs: list[int], hashes: list[int], expires: float
    ) -> None:
        """This process's store, indexed at once (the refresh will skip these ids)."""
        if self.disabled:
            return
        self.held.update(ids)
        self.high = max(self.high, *ids) if self.ready else self.high
        rows = self.index.rows([check_id] * len(ids), seqs, hashes)
        self.index.set_expiry(rows.checks[:1], np.array([expires]))
        self.index.add(rows)

    def forget(self, check_id: str) -> None:
        self.index.forget(check_id)

    async def _read_after(self, after: int, limit: int | None) -> Columns | None:
        """Rows after id ``after`` (at most ``limit``), as columns."""
        params = (self.ref, after, limit or 2**62)

        def read(conn: Connection) -> Columns | None:
            if self.dialect == "postgresql":
                row = conn.exec_driver_sql(_PG_ROWS_SQL, params).one()
                return None if row[0] is None else _columns(*row)
            rows = conn.exec_driver_sql(_SQLITE_ROWS_SQL, params).all()
            return _columns(*zip(*rows, strict=True)) if rows else None

        return await self.read(read)

    def _rows(self, columns: Columns, keep: np.ndarray | None = None) -> Rows:
        """The ``keep`` rows of ``columns`` numbered in this index (on the loop only), expiry recorded."""
        _, check_ids, seqs, hashes, expires = columns
        if keep is not None:
            check_ids = [c for c, k in zip(check_ids, keep.tolist(), strict=True) if k]
            seqs, hashes, expires = seqs[keep], hashes[keep], expires[keep]
        rows = self.index.rows(check_ids, seqs, hashes)
        self.index.set_expiry(rows.checks, expires)
        return rows

    async def _compact(self) -> None:
        small = self.index.small_segments()
        if len(small) <= MAX_SMALL_SEGMENTS:
            return
        base = self.index.base
        # The base joins the merge once the small segments hold a quarter of its rows.
        parts = (
            small if base is not None and sum(len(s) for s in small) * 4 <= len(base) else self.index.segments
        )
        if sum(len(s) for s in parts) > self.max_rows:
            self._disable(f"more than {self.max_rows} frame hashes (cache_index_max_rows)")
            return
        now = time.time()
        if sum(len(s) for s in parts) < INLINE_MERGE_ROWS:
            merged = Segment(self.index.live_rows(parts, now))
        else:
            # Look-ups and stores go on meanwhile; replace() keeps checks that left ``parts``.
            merged = await asyncio.to_thread(lambda: Segment(self.index.live_rows(parts, now)))
        self.index.replace(parts, merged)

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        self.ready = False
        self.index = FrameIndex()
        self.held.clear()
