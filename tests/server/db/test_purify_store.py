"""Crops and purification results against real SQLite and PostgreSQL: race-safe and first-writer-wins."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.db import migrate
from server.db.engine import create_engine, session_factory
from server.db.purify_models import PurifyStatus
from server.robust import purify_store as ps


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + i, 16, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture
async def sessions(migrated_url: str):
    engine = create_engine(migrated_url)
    yield session_factory(engine)
    await engine.dispose()


def test_crop_key_depends_on_pixels_and_shape_only() -> None:
    a = np.zeros((4, 6, 3), np.uint8)
    assert ps.crop_key(a) == ps.crop_key(a.copy())
    assert ps.crop_key(a) != ps.crop_key(np.zeros((6, 4, 3), np.uint8))
    assert ps.crop_key(a[:, ::-1]) == ps.crop_key(a)  # a strided view hashes like its copy
    with pytest.raises(ValueError):
        ps.crop_key(np.zeros((4, 4), np.uint8))


def test_png_round_trip_is_lossless() -> None:
    crop = _crops(1)[0]
    assert np.array_equal(ps.decode_png(ps.encode_png(crop)), crop)


async def test_put_crops_is_idempotent_and_concurrent_writers_do_not_clash(sessions) -> None:
    crops = _crops(3)
    results = await asyncio.gather(*(ps.put_crops(sessions, crops + crops[:1]) for _ in range(4)))
    keys = results[0]
    assert all(r == keys for r in results)
    assert keys[3] == keys[0]
    stored = await ps.get_crops(sessions, [*keys, "0" * 64])
    assert set(stored) == set(keys)
    for key, crop in zip(keys, crops, strict=False):
        assert np.array_equal(stored[key], crop)


async def test_first_final_result_wins_and_attempts_are_counted(sessions) -> None:
    sha = (await ps.put_crops(sessions, _crops(1)))[0]
    key = ps.result_key(sha, "dip-1", "det@1")
    assert await ps.begin_attempts(sessions, {key: sha}) == {key: 1}
    assert await ps.begin_attempts(sessions, {key: sha}) == {key: 2}
    assert await ps.get_results(sessions, [key]) == {}  # running is not a result

    done = ps.Outcome(key, sha, PurifyStatus.DONE, purified_score=0.25, iterations=7, purified_png=b"x")
    assert await ps.save_results(sessions, [done]) == 1
    late = ps.Outcome.failed(key, sha, "too late")
    assert await ps.save_results(sessions, [late]) == 0
    row = (await ps.get_results(sessions, [key]))[key]
    assert (row.status, row.purified_score, row.iterations, row.attempts, row.error) == (
        "done",
        0.25,
        7,
        2,
        None,
    )
    assert row.purified_png == b"x"
    assert await ps.begin_attempts(sessions, {key: sha}) == {}  # finished keys are not attempted again


async def test_a_result_can_be_saved_without_a_running_row(sessions) -> None:
    key = ps.result_key("f" * 64, "dip-1", "det@1")
    assert await ps.save_results(sessions, [ps.Outcome.failed(key, "f" * 64, "crop not found")]) == 1
    row = (await ps.get_results(sessions, [key]))[key]
    assert (row.status, row.error, row.attempts) == ("failed", "crop not found", 0)


def test_sync_store_runs_the_same_operations(migrated_url: str) -> None:
    store = ps.PurifyStore(migrated_url)
    try:
        [sha] = store.put_crops(_crops(1))
        key = ps.result_key(sha, "v", "d@1")
        assert store.begin_attempts({key: sha}) == {key: 1}
        assert store.save_results([ps.Outcome(key, sha, PurifyStatus.DONE, purified_score=0.5)]) == 1
        assert store.get_results([key])[key].purified_score == 0.5
        assert set(store.get_crops([sha])) == {sha}
    finally:
        store.close()


async def test_purification_migration_goes_down_to_the_previous_revision(database_url: str) -> None:
    migrate.upgrade(database_url)
    migrate.downgrade(database_url, "0002")
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
    await engine.dispose()
    assert not {"crops", "purifications"} & names
    migrate.upgrade(database_url)
    assert await migrate.current_revision(database_url) == migrate.head_revision()
