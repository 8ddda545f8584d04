"""The verdict cache: exact keys (URL, video id, SHA-256) and near-duplicate frame look-up.

Every key carries ``model_ref`` (detector id, version and weights hash): a verdict made by one
model is never served as another's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import numpy as np
from sqlalchemy import (
    URL,
    Connection,
    Select,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from server.db.frame_match import FRAME_MATCH_BITS, MIN_MATCHED_FRAMES, candidates, confirm
from server.db.frame_mirror import FrameMirror
from server.db.models import CacheKey, Check, CheckStatus, FrameHash, Verdict
from server.vision.card import ModelCard
from server.vision.phash import bands, to_signed, to_unsigned

# Query hashes used for a near-duplicate look-up: enough to survive a trimmed start, few
# enough to keep the candidate query small.
MAX_QUERY_HASHES = 32

# Candidate checks confirmed by full sequence comparison, best band-hit counts first.
MAX_CANDIDATES = 16

# Exact-key hits kept in this process (a viral video's badge is looked up again and again), and
# for how long one is served before the database is asked again.
HOT_KEYS = 4096
HOT_KEY_TTL_S = 5.0

# Threads (and connections) reading an SQLite cache; see _SqliteReader.
READER_THREADS = 2

T = TypeVar("T")


def model_ref(card: ModelCard) -> str:
    """The model part of every key: id, version and the weights' hash prefix."""
    return f"{card.id}@{card.version}#{card.weights_sha256[:12]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands naive datetimes back; they were written as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CacheHit:
    """A cached verdict and how it was found."""

    check_id: str
    kind: str
    verdict: dict[str, Any]
    matched_frames: int | None = None
    query_frames: int | None = None

    def as_verdict(self) -> dict[str, Any]:
        """The stored verdict marked as served from cache."""
        out = dict(self.verdict)
        out["cached"] = True
        out["cache"] = {
            "check_id": self.check_id,
            "matched_by": self.kind,
            **(
                {"matched_frames": self.matched_frames, "query_frames": self.query_frames}
                if self.matched_frames is not None
                else {}
            ),
        }
        return out


async def store(
    sessions: async_sessionmaker,
    check_id: str,
    ref: str,
    keys: Iterable[tuple[str, str]],
    frame_hashes: Sequence[tuple[int, float, int]],
    ttl: timedelta,
) -> list[dict[str, Any]]:
    """Index a finished check's verdict under ``keys`` and its sampled frame hashes.

    A key already pointing at another verdict is moved to this newer one. Returns the key list
    for the verdict's ``keys`` field.
    """
    expires = _now() + ttl
    described: list[dict[str, Any]] = []
    async with sessions() as s, s.begin():
        dialect = s.bind.dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        for kind, value in dict.fromkeys(keys):
            stmt = insert(CacheKey).values(
                kind=kind,
                value=value,
                model_ref=ref,
                check_id=check_id,
                created_at=_now(),
                expires_at=expires,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["kind", "value", "model_ref"],
                set_={"check_id": check_id, "created_at": _now(), "expires_at": expires},
            )
            await s.execute(stmt)
            described.append({"kind": kind, "value": value})
        stored: list[FrameHash] = []
        if frame_hashes:
            await s.execute(delete(FrameHash).where(FrameHash.check_id == check_id))
            stored = [
                FrameHash(
                    check_id=check_id,
                    model_ref=ref,
                    seq=seq,
                    t=t,
                    phash=to_signed(h),
                    b0=b[0],
                    b1=b[1],
                    b2=b[2],
                    b3=b[3],
                    expires_at=expires,
                )
                for seq, t, h in frame_hashes
                for b in [bands(to_unsigned(h))]
            ]
            s.add_all(stored)
            await s.flush()  # assigns the ids the in-memory index records
            described.append({"kind": "frames", "count": len(frame_hashes)})
        rows = [(f.id, f.seq, f.phash) for f in stored]
    mirror = _state(sessions).mirrors.get(ref)
    if mirror is not None and rows:
        ids, seqs, hashes = (list(c) for c in zip(*rows, strict=True))
        mirror.add_local(ids, check_id, seqs, hashes, expires.timestamp())
    hot = _hot_keys(sessions)
    for key in described:
        if "value" in key:
            hot.forget(kind=key["kind"], value=key["value"])
    return described


# The hot paths below run prepared Core statements on a pooled connection (no ORM session or
# object construction); the statements are built once and SQLAlchemy caches their compiled form
# (the IN lists have a fixed length).
_KEY_QUERY = (
    select(CacheKey.check_id, CacheKey.expires_at, Verdict.payload)
    .join(Verdict, Verdict.check_id == CacheKey.check_id)
    .where(
        CacheKey.kind == bindparam("kind"),
        CacheKey.value == bindparam("value"),
        CacheKey.model_ref == bindparam("ref"),
    )
)


def _frames_query() -> Select:
    # SQLite's near-duplicate query (PostgreSQL runs _PG_FRAMES_SQL, below, with the same seeks).
    # Candidates: one index seek per band on (model_ref, band, expires_at, check_id), combined
    # with UNION ALL so every database plans four seeks (an OR of the bands made SQLite scan the
    # model's rows); the index covers the columns read, so no table row is visited. The best
    # MAX_CANDIDATES checks by band hits then come back with all their frames in the same round
    # trip. Each IN list has a fixed MAX_QUERY_HASHES parameters (padded by repeating a value),
    # so the SQL text never changes: the drivers' prepared-statement caches hit every time.
    bands_ = (FrameHash.b0, FrameHash.b1, FrameHash.b2, FrameHash.b3)
    hits = union_all(
        *(
            select(FrameHash.check_id).where(
                FrameHash.model_ref == bindparam("ref"),
                col.in_([bindparam(f"b{i}_{k}") for k in range(MAX_QUERY_HASHES)]),
                FrameHash.expires_at > bindparam("now"),
            )
            for i, col in enumerate(bands_)
        )
    ).subquery("hits")
    n = func.count().label("n")
    cands = (
        select(hits.c.check_id, n)
        .group_by(hits.c.check_id)
        .order_by(n.desc(), hits.c.check_id)
        .limit(MAX_CANDIDATES)
        .subquery("cands")
    )
    return (
        select(FrameHash.check_id, FrameHash.seq, FrameHash.phash, cands.c.n)
        .join(cands, cands.c.check_id == FrameHash.check_id)
        .order_by(cands.c.n.desc(), FrameHash.check_id, FrameHash.seq)
    )


_FRAMES_QUERY = _frames_query()
_VERDICT_QUERY = select(Verdict.payload).where(Verdict.check_id == bindparam("check_id"))

# The PostgreSQL form of the near-duplicate look-up: one statement, one round trip. The same band
# seeks pick the same candidates; PostgreSQL then compares each candidate frame with each query
# frame (bit_count, PostgreSQL 14+) and sends back, per candidate that matches at least
# MIN_MATCHED_FRAMES query frames, only its matching (seq, query frame) pairs, its frame count and
# its verdict. Usually that is one row for a hit and none for a miss, instead of MAX_CANDIDATES ×
# 12 frame rows and a second query for the verdict. The alignment vote stays in Python
# (frame_match.confirm), shared with SQLite. The text never changes (arrays, not IN lists), so asyncpg's
# prepared statement is reused.
_PG_FRAMES_SQL = (
    "WITH hits AS ("
    + " UNION ALL ".join(
        f"SELECT check_id FROM frame_hashes WHERE model_ref = $1 AND b{i} = ANY(${i + 3}::integer[])"
        " AND expires_at > $2"
        for i in range(4)
    )
    + """
), cands AS (
    SELECT check_id, count(*) AS n FROM hits GROUP BY check_id ORDER BY n DESC, check_id LIMIT $10
), query AS (
    SELECT u.h, (u.i - 1)::integer AS qi FROM unnest($7::bigint[]) WITH ORDINALITY AS u(h, i)
), frames AS (
    SELECT f.check_id, f.seq, f.phash FROM frame_hashes f JOIN cands c ON c.check_id = f.check_id
), sizes AS (
    SELECT check_id, count(*) AS size FROM frames GROUP BY check_id
), pairs AS (
    SELECT f.check_id, array_agg(f.seq ORDER BY q.qi, f.seq) AS seqs,
           array_agg(q.qi ORDER BY q.qi, f.seq) AS qis, count(DISTINCT q.qi) AS reach
      FROM frames f JOIN query q ON bit_count((f.phash # q.h)::bit(64)) <= $8
     GROUP BY f.check_id
)
SELECT c.check_id, s.size, p.seqs, p.qis, v.payload::text
  FROM cands c
  JOIN sizes s ON s.check_id = c.check_id
  JOIN pairs p ON p.check_id = c.check_id
  LEFT JOIN verdicts v ON v.check_id = c.check_id
 WHERE p.reach >= $9
 ORDER BY c.n DESC, c.check_id"""
)


class _SqliteReader:
    """Look-ups on an SQLite file through the plain sqlite3 driver, on threads of their own.

    aiosqlite hands every cursor call to its connection thread and back (five round trips for
    one query); here a whole look-up is one hand-off. WAL lets these readers run beside the
    writer, and each look-up's transaction sees everything committed before it began.
    """

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(
            url.set(drivername="sqlite"), pool_size=READER_THREADS, connect_args={"timeout": 30}
        )
        event.listen(self.engine, "connect", _read_only)
        self.executor = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="cache-read")

    async def run(self, fn: Callable[[Connection], T]) -> T:
        def call() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        self.engine.dispose()


def _read_only(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _reader(engine: AsyncEngine) -> _SqliteReader | None:
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return _SqliteReader(url)


async def _read(sessions: async_sessionmaker, fn: Callable[[Connection], T]) -> T:
    """Run the synchronous query function ``fn`` on a connection to the cache's database."""
    state = _state(sessions)
    if state.reader is not None:
        return await state.reader.run(fn)
    async with state.engine.connect() as conn:
        return await conn.run_sync(fn)


class _HotKeys:
    """Recently served exact-key hits of one database, kept for a few seconds.

    Keyed by (kind, value, model_ref), so another detector never sees these verdicts. This
    process's ``store``/``invalidate`` drop the affected entries at once; a change made by another
    server process is seen after at most HOT_KEY_TTL_S.
    """

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str, str, str], tuple[float, datetime, CacheHit]] = OrderedDict()
        # Bumped by every forget: a look-up that read the database before an invalidation
        # finished must not put what it read back afterwards.
        self.generation = 0

    def get(self, key: tuple[str, str, str]) -> CacheHit | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        fetched, expires, hit = entry
        if time.monotonic() - fetched > HOT_KEY_TTL_S or expires <= _now():
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return hit

    def put(self, key: tuple[str, str, str], expires: datetime, hit: CacheHit, generation: int) -> None:
        if generation != self.generation:
            return
        self.entries[key] = (time.monotonic(), expires, hit)
        self.entries.move_to_end(key)
        while len(self.entries) > HOT_KEYS:
            self.entries.popitem(last=False)

    def forget(
        self, *, check_id: str | None = None, kind: str | None = None, value: str | None = None
    ) -> None:
        self.generation += 1
        for key, (_, _, hit) in list(self.entries.items()):
            if (check_id is not None and hit.check_id == check_id) or (
                kind is not None and key[0] == kind and key[1] == value
            ):
                del self.entries[key]


@dataclass
class _State:
    """What this process keeps per database (per session factory)."""

    hot: _HotKeys
    reader: _SqliteReader | None
    # Look-ups only read, each query on its own: in autocommit they skip the BEGIN and ROLLBACK
    # round trips PostgreSQL would otherwise get around every look-up.
    engine: AsyncEngine
    # In-memory near-duplicate indexes by model ref (server/db/frame_mirror.py), when started.
    mirrors: dict[str, FrameMirror] = field(default_factory=dict)


_states: WeakKeyDictionary[async_sessionmaker, _State] = WeakKeyDictionary()


def _state(sessions: async_sessionmaker) -> _State:
    state = _states.get(sessions)
    if state is None:
        engine = sessions.kw["bind"]
        state = _states[sessions] = _State(
            _HotKeys(), _reader(engine), engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        if state.reader is not None:
            weakref.finalize(sessions, state.reader.close)
    return state


def _hot_keys(sessions: async_sessionmaker) -> _HotKeys:
    return _state(sessions).hot


async def lookup_key(sessions: async_sessionmaker, kind: str, value: str, ref: str) -> CacheHit | None:
    """The verdict stored under an exact key, unless expired."""
    hot = _hot_keys(sessions)
    if (hit := hot.get((kind, value, ref))) is not None:
        return hit
    generation = hot.generation
    # One indexed query: the key joined to its verdict (this is the hot path of every badge).
    params = {"kind": kind, "value": value, "ref": ref}
    row = await _read(sessions, lambda conn: conn.execute(_KEY_QUERY, params).first())
    if row is None:
        return None
    expires = _aware(row.expires_at)
    if expires <= _now():
        return None
    hit = CacheHit(row.check_id, kind, row.payload)
    hot.put((kind, value, ref), expires, hit, generation)
    return hit


def _band_values(unsigned: list[int]) -> list[list[int]]:
    split = [bands(h) for h in unsigned]
    return [sorted({b[i] for b in split}) for i in range(4)]


def _frame_match(conn: Connection, unsigned: list[int], ref: str) -> tuple[str, int, dict[str, Any]] | None:
    """The best confirmed candidate (check id, matched frames, verdict), on one SQLite connection."""
    params: dict[str, Any] = {"ref": ref, "now": _now()}
    for i, values in enumerate(_band_values(unsigned)):
        for k in range(MAX_QUERY_HASHES):
            params[f"b{i}_{k}"] = values[min(k, len(values) - 1)]
    rows = conn.execute(_FRAMES_QUERY, params).all()
    if not rows:
        return None
    ids = [r[0] for r in rows]
    starts = [j for j in range(len(ids)) if j == 0 or ids[j] != ids[j - 1]]
    ends = [*starts[1:], len(ids)]
    seqs = np.array([r[1] for r in rows], dtype=np.int64)
    stored = np.array([r[2] for r in rows], dtype=np.int64).view(np.uint64)
    groups = [(ids[a], seqs[a:b], stored[a:b]) for a, b in zip(starts, ends, strict=True)]
    best = confirm(len(unsigned), candidates(unsigned, groups))
    if best is None:
        return None
    verdict = conn.execute(_VERDICT_QUERY, {"check_id": best[0]}).scalar_one_or_none()
    return None if verdict is None else (best[0], best[1], verdict)


async def _frame_match_pg(
    conn: AsyncConnection, unsigned: list[int], ref: str
) -> tuple[str, int, dict[str, Any]] | None:
    """As _frame_match, in one PostgreSQL statement that confirms frames by Hamming distance itself."""
    params = (
        ref,
        _now(),
        *_band_values(unsigned),
        [to_signed(h) for h in unsigned],
        FRAME_MATCH_BITS,
        MIN_MATCHED_FRAMES,
        MAX_CANDIDATES,
    )
    rows = (await conn.exec_driver_sql(_PG_FRAMES_SQL, params)).all()
    if not rows:
        return None
    best = confirm(len(unsigned), ((r[0], r[1], r[2], r[3]) for r in rows))
    if best is None:
        return None
    payload = next(r[4] for r in rows if r[0] == best[0])
    return None if payload is None else (best[0], best[1], json.loads(payload))


# The verdict of a candidate found in memory, if the database still holds its frames unexpired,
# as driver SQL with the payload as text: no statement compilation or result processing per hit.
# PostgreSQL's is sent by asyncpg itself on the pooled connection, no greenlet hop either (0.30
# instead of 0.44 ms of CPU per hit, measured).
_PG_CONFIRM_SQL = (
    "SELECT v.payload::text FROM verdicts v WHERE v.check_id = $1 AND EXISTS"
    " (SELECT 1 FROM frame_hashes f WHERE f.check_id = $1 AND f.model_ref = $2 AND f.expires_at > now())"
)
_SQLITE_CONFIRM_SQL = (
    "SELECT v.payload FROM verdicts v WHERE v.check_id = ? AND EXISTS (SELECT 1 FROM frame_hashes f"
    " WHERE f.check_id = ? AND +f.model_ref = ? AND julianday(f.expires_at) > julianday('now'))"
)  # ``+``: without it SQLite searched a band index by model_ref, every row of the model (16 ms)

# _mirror_match's answer when only the database can tell (its hit is gone there).
_UNSURE: Any = object()


async def _mirror_match(
    sessions: async_sessionmaker, mirror: FrameMirror, unsigned: list[int]
) -> tuple[str, int, dict[str, Any]] | None:
    """As _frame_match, with candidates from the in-memory index; a hit is confirmed in the database.

    A miss needs no database at all. A hit whose frames another process removed is dropped from
    the index and the look-up left to the database (_UNSURE), which then finds what it would have.
    """
    groups = mirror.index.candidates(unsigned, time.time(), MAX_CANDIDATES)
    best = confirm(len(unsigned), candidates(unsigned, groups))
    if best is None:
        mirror.answered += 1
        return None
    state = _state(sessions)
    if state.engine.dialect.name == "postgresql":
        async with state.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            text_ = await raw.driver_connection.fetchval(_PG_CONFIRM_SQL, best[0], mirror.ref)
        verdict = None if text_ is None else json.loads(text_)
    else:
        args = (best[0], best[0], mirror.ref)
        text_ = await _read(sessions, lambda c: c.exec_driver_sql(_SQLITE_CONFIRM_SQL, args).scalar())
        verdict = None if text_ is None else json.loads(text_)
    if verdict is None:
        mirror.forget(best[0])
        return _UNSURE
    mirror.answered += 1
    return best[0], best[1], verdict


async def start_mirror(sessions: async_sessionmaker, ref: str, max_rows: int) -> FrameMirror:
    """Serve ``ref``'s near-duplicate look-ups from memory once its frame hashes are loaded."""
    state = _state(sessions)
    mirror = state.mirrors.get(ref)
    if mirror is None:
        mirror = state.mirrors[ref] = FrameMirror(
            functools.partial(_read, sessions), state.engine.dialect.name, ref, max_rows
        )
        mirror.start()
    return mirror


async def stop_mirrors(sessions: async_sessionmaker) -> None:
    state = _state(sessions)
    mirrors, state.mirrors = list(state.mirrors.values()), {}
    for mirror in mirrors:
        await mirror.stop()


def mirror_status(sessions: async_sessionmaker) -> dict[str, Any]:
    """Each started in-memory index: ready, rows, segments (and why it stopped, if it did)."""
    return {ref: m.status() for ref, m in _state(sessions).mirrors.items()}


async def lookup_frames(sessions: async_sessionmaker, hashes: Sequence[int], ref: str) -> CacheHit | None:
    """The cached verdict of a near-duplicate of the video these sampled-frame hashes came from."""
    unsigned = [to_unsigned(h) for h in hashes[:MAX_QUERY_HASHES]]
    if len(unsigned) < MIN_MATCHED_FRAMES:
        return None
    state = _state(sessions)
    mirror = state.mirrors.get(ref)
    found = (
        await _mirror_match(sessions, mirror, unsigned) if mirror is not None and mirror.ready else _UNSURE
    )
    if found is _UNSURE and state.engine.dialect.name == "postgresql":
        async with state.engine.connect() as conn:
            found = await _frame_match_pg(conn, unsigned, ref)
    elif found is _UNSURE:
        found = await _read(sessions, lambda conn: _frame_match(conn, unsigned, ref))
    if found is None:
        return None
    check_id, matched, verdict = found
    return CacheHit(check_id, "frames", verdict, matched_frames=matched, query_frames=len(unsigned))


async def invalidate(
    sessions: async_sessionmaker,
    *,
    check_id: str | None = None,
    kind: str | None = None,
    value: str | None = None,
) -> int:
    """Forget cached keys of a check, or one exact key; returns rows removed."""
    removed = 0
    async with sessions() as s, s.begin():
        if check_id is not None:
            removed += (await s.execute(delete(CacheKey).where(CacheKey.check_id == check_id))).rowcount or 0
            removed += (
                await s.execute(delete(FrameHash).where(FrameHash.check_id == check_id))
            ).rowcount or 0
        if kind is not None and value is not None:
            removed += (
                await s.execute(delete(CacheKey).where(CacheKey.kind == kind, CacheKey.value == value))
            ).rowcount or 0
    state = _state(sessions)
    state.hot.forget(check_id=check_id, kind=kind, value=value)
    if check_id is not None:
        for mirror in state.mirrors.values():
            mirror.forget(check_id)
    return removed


async def purge_expired(sessions: async_sessionmaker) -> int:
    """Delete expired keys and frame hashes (a periodic job)."""
    now = _now()
    async with sessions() as s, s.begin():
        n = (await s.execute(delete(CacheKey).where(CacheKey.expires_at <= now))).rowcount or 0
        n += (await s.execute(delete(FrameHash).where(FrameHash.expires_at <= now))).rowcount or 0
    return n


async def active_check_with(
    sessions: async_sessionmaker,
    *,
    ref_id: str,
    ref_version: str,
    source_url: str | None = None,
    sha256: str | None = None,
    exclude: str | None = None,
) -> str | None:
    """An unfinished check of the same video and model (single flight across servers)."""
    conds = [
        Check.status.in_(CheckStatus.ACTIVE),
        Check.model_id == ref_id,
        Check.model_version == ref_version,
    ]
    if source_url is not None:
        conds.append(Check.source_url == source_url)
    elif sha256 is not None:
        conds.append(Check.sha256 == sha256)
    else:
        return None
    if exclude is not None:
        conds.append(Check.id != exclude)
    async with sessions() as s:
        row = await s.execute(select(Check.id).where(*conds).order_by(Check.created_at, Check.id).limit(1))
        return row.scalar_one_or_none()
