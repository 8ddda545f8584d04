"""The engine's connection pool on real PostgreSQL and SQLite."""

from __future__ import annotations

from server.db.engine import POOL_SIZE, create_engine, fill_pool


async def test_the_postgresql_pool_is_filled_before_the_first_request(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await fill_pool(engine)
        pool = engine.sync_engine.pool
        if database_url.startswith("postgresql"):
            assert pool.checkedin() == POOL_SIZE and pool.checkedout() == 0
        else:  # SQLite opens its file per connection as needed: nothing to fill
            assert pool.checkedin() == 0
    finally:
        await engine.dispose()


async def test_filling_a_pool_of_an_unreachable_database_does_not_raise() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        await fill_pool(engine)
        assert engine.sync_engine.pool.checkedin() == 0
    finally:
        await engine.dispose()
