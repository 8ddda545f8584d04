"""The in-memory near-duplicate index against the database it mirrors (real SQLite and PostgreSQL).

Two session factories on one database stand for two server processes: "mirrored" keeps the
index, "plain" looks up in the database only and writes as another process would.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import insert

from server.db import cache, frame_mirror, migrate, repo
from server.db.engine import create_engine, session_factory
from server.db.models import FrameHash
from server.vision.phash import bands, to_signed
from tests.helpers.mirror import wait_ready

REF = "test-model@1#abcdef012345"
TTL = timedelta(days=1)


@pytest.fixture
async def pair(migrated_url: str):
    engines = [create_engine(migrated_url), create_engine(migrated_url)]
    mirrored, plain = (session_factory(e) for e in engines)
    yield mirrored, plain
    await cache.stop_mirrors(mirrored)
    for engine in engines:
        await engine.dispose()


async def _cache(sessions, check_id: str, hashes: list[int], ttl: timedelta = TTL) -> None:
    await repo.create_check(sessions, id=check_id, source="upload", model_id="m", model_version="1")
    await repo.finish_check(sessions, check_id, {"label": "authentic", "score": 0.1})
    await cache.store(sessions, check_id, REF, [], [(i, i / 2, h) for i, h in enumerate(hashes)], ttl)


def _clustered(rng: np.random.Generator, n: int, pool: np.ndarray) -> list[int]:
    # Every band drawn from a small pool of values: many stored frames share bands, so the
    # candidate choice (most band hits, ties by check id) is exercised, not just the exact hit.
    parts = pool[np.arange(4), rng.integers(0, pool.shape[1], size=(n, 4))]
    return [int(sum(int(p) << (16 * (3 - i)) for i, p in enumerate(row))) for row in parts]


def _flip(rng: np.random.Generator, h: int, bits: int) -> int:
    for b in rng.choice(64, size=bits, replace=False).tolist():
        h ^= 1 << b
    return h


async def test_memory_and_database_give_the_same_answers(pair) -> None:
    mirrored, plain = pair
    rng = np.random.default_rng(11)
    pool = rng.integers(0, 2**16, size=(4, 24))
    stored = {f"{k:032x}": _clustered(rng, int(rng.integers(6, 16)), pool) for k in range(240)}
    for check_id, hashes in list(stored.items())[:200]:
        await _cache(plain, check_id, hashes)
    mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
    for check_id, hashes in list(stored.items())[200:]:  # stored after start-up, by this process
        await _cache(mirrored, check_id, hashes)
    assert mirror.status()["rows"] == sum(len(h) for h in stored.values())

    ids = list(stored)
    hits = 0
    for q in range(300):
        source = stored[ids[int(rng.integers(len(ids)))]]
        kind = q % 4
        if kind == 0:  # a re-encode: every frame a few bits off
            query = [_flip(rng, h, int(rng.integers(0, 15))) for h in source]
        elif kind == 1:  # trimmed, with a frame dropped
            query = source[int(rng.integers(0, 3)) :]
            del query[len(query) // 2]
        elif kind == 2:  # mixed with frames of other videos
            query = source[:4] + _clustered(rng, 6, pool)
        else:  # unrelated frames that still share bands with many stored ones
            query = _clustered(rng, 10, pool)
        expected = await cache.lookup_frames(plain, query, REF)
        got = await cache.lookup_frames(mirrored, query, REF)
        assert (got and (got.check_id, got.matched_frames)) == (
            expected and (expected.check_id, expected.matched_frames)
        ), f"query {q} (kind {kind})"
        hits += expected is not None
    assert 100 < hits < 300
    assert mirror.answered == 300


async def test_another_process_store_is_found_after_a_refresh(pair) -> None:
    mirrored, plain = pair
    mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
    hashes = [int(h) for h in np.random.default_rng(1).integers(0, 2**63, size=12)]
    await _cache(plain, "p" * 32, hashes)
    assert await cache.lookup_frames(mirrored, hashes, REF) is None  # not read yet
    await mirror.refresh()
    hit = await cache.lookup_frames(mirrored, hashes, REF)
    assert hit is not None and hit.check_id == "p" * 32
    await mirror.refresh()  # the same rows read again are not indexed twice
    assert mirror.status()["rows"] == 12


async def _rows(sessions, check_id: str, hashes: list[int], start_id: int) -> None:
    """Frame rows with explicit ids, as a transaction that took its ids long before committing."""
    expires = datetime.now(UTC) + TTL
    async with sessions() as s, s.begin():
        await s.execute(
            insert(FrameHash),
            [
                dict(
                    id=start_id + i, check_id=check_id, model_ref=REF, seq=i, t=i / 2.0,
                    phash=to_signed(h), **{f"b{k}": v for k, v in enumerate(bands(h))},
                    expires_at=expires,
                )
                for i, h in enumerate(hashes)
            ],
        )  # fmt: skip


@pytest.mark.parametrize("read_by", ["refresh", "start-up load"])
async def test_a_row_committed_below_ids_already_read_is_found(pair, read_by: str) -> None:
    # Ids are handed out before commit: a slow transaction's rows can land below rows another
    # one committed (and the mirror read) first. Played here with explicit ids.
    mirrored, plain = pair
    rng = np.random.default_rng(2)
    first = [int(h) for h in rng.integers(0, 2**63, size=8)]
    late = [int(h) for h in rng.integers(0, 2**63, size=8)]
    for check_id in ("l" * 32, "f" * 32):
        await repo.create_check(plain, id=check_id, source="upload", model_id="m", model_version="1")
        await repo.finish_check(plain, check_id, {"label": "manipulated", "score": 0.9})
    if read_by == "refresh":
        mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
        await _rows(plain, "f" * 32, first, 1000)
        await mirror.refresh()
        await mirror.refresh()  # the second read starts after id 1007
    else:
        await _rows(plain, "f" * 32, first, 1000)
        mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
    assert mirror.high == 1007
    await _rows(plain, "l" * 32, late, 1000 - len(late))
    await mirror.refresh()
    hit = await cache.lookup_frames(mirrored, late, REF)
    assert hit is not None and hit.check_id == "l" * 32
    assert mirror.status()["rows"] == 16


async def test_a_verdict_removed_by_another_process_is_not_served(pair) -> None:
    mirrored, plain = pair
    mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
    hashes = [int(h) for h in np.random.default_rng(3).integers(0, 2**63, size=12)]
    await _cache(mirrored, "r" * 32, hashes)
    assert (await cache.lookup_frames(mirrored, hashes, REF)).check_id == "r" * 32
    await cache.invalidate(plain, check_id="r" * 32)
    assert await cache.lookup_frames(mirrored, hashes, REF) is None
    assert mirror.status()["rows"] == 0  # dropped once the database said so


async def test_this_process_invalidation_and_expiry_apply_at_once(pair) -> None:
    mirrored, _ = pair
    mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
    rng = np.random.default_rng(4)
    kept, gone, old = ([int(h) for h in rng.integers(0, 2**63, size=10)] for _ in range(3))
    await _cache(mirrored, "k" * 32, kept)
    await _cache(mirrored, "g" * 32, gone)
    await _cache(mirrored, "o" * 32, old, ttl=timedelta(seconds=-1))
    await cache.invalidate(mirrored, check_id="g" * 32)
    answered = mirror.answered
    assert (await cache.lookup_frames(mirrored, kept, REF)).check_id == "k" * 32
    assert await cache.lookup_frames(mirrored, gone, REF) is None
    assert await cache.lookup_frames(mirrored, old, REF) is None
    assert mirror.answered == answered + 3


async def test_a_restored_check_keeps_only_its_new_frames(pair) -> None:
    mirrored, _ = pair
    mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
    rng = np.random.default_rng(5)
    before, after = ([int(h) for h in rng.integers(0, 2**63, size=10)] for _ in range(2))
    await _cache(mirrored, "s" * 32, before)
    await cache.store(mirrored, "s" * 32, REF, [], [(i, i / 2, h) for i, h in enumerate(after)], TTL)
    assert await cache.lookup_frames(mirrored, before, REF) is None
    assert (await cache.lookup_frames(mirrored, after, REF)).check_id == "s" * 32
    assert mirror.status()["rows"] == 10


async def test_small_segments_are_merged_and_answers_stay_the_same(pair, monkeypatch) -> None:
    mirrored, plain = pair
    monkeypatch.setattr(frame_mirror, "INLINE_MERGE_ROWS", 50)  # larger merges go to a thread
    mirror = await wait_ready(await cache.start_mirror(mirrored, REF, max_rows=100_000))
    rng = np.random.default_rng(6)
    stored = {f"{k:032x}": [int(h) for h in rng.integers(0, 2**63, size=8)] for k in range(30)}
    for check_id, hashes in stored.items():
        await _cache(plain, check_id, hashes)
        await mirror.refresh()
    assert len(mirror.index.segments) <= 1 + frame_mirror.MAX_SMALL_SEGMENTS
    assert mirror.status()["rows"] == 240
    for check_id, hashes in stored.items():
        assert (
            await cache.lookup_frames(mirrored, [_flip(rng, h, 5) for h in hashes], REF)
        ).check_id == check_id


async def test_an_index_over_its_row_limit_is_dropped_and_the_database_answers(pair) -> None:
    mirrored, plain = pair
    hashes = [int(h) for h in np.random.default_rng(7).integers(0, 2**63, size=12)]
    await _cache(plain, "b" * 32, hashes)
    mirror = await cache.start_mirror(mirrored, REF, max_rows=5)
    await mirror.task
    assert not mirror.ready and "more than 5 frame hashes" in mirror.status()["disabled"]
    assert (await cache.lookup_frames(mirrored, hashes, REF)).check_id == "b" * 32
    assert mirror.answered == 0


def test_sqlite_reads_use_the_check_and_id_indexes(tmp_path) -> None:
    # SQLite preferred a band index for "model_ref = ?" and so walked every row of the model:
    # 16 ms per confirmed hit and a quadratic start-up load on the 100k bench fill.
    url = f"sqlite:///{tmp_path / 'plan.sqlite3'}"
    migrate.upgrade(url.replace("sqlite://", "sqlite+aiosqlite://"))
    with sqlite3.connect(tmp_path / "plan.sqlite3") as conn:
        confirm = conn.execute(f"EXPLAIN QUERY PLAN {cache._SQLITE_CONFIRM_SQL}", ("c", "c", REF)).fetchall()
        rows = conn.execute(f"EXPLAIN QUERY PLAN {frame_mirror._SQLITE_ROWS_SQL}", (REF, 0, 10)).fetchall()
    assert any("ix_frame_hashes_check_id" in step[-1] for step in confirm), confirm
    assert "INTEGER PRIMARY KEY" in rows[0][-1] and len(rows) == 1, rows  # no sort step either
