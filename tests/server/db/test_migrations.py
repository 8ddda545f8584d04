"""Alembic migrations run up and down on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from server.db import migrate
from server.db.models import Base


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


async def _diff(url: str) -> list:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    await engine.dispose()
    return diff


async def test_upgrade_creates_every_table_and_downgrade_removes_them(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert await _tables(database_url) == set(Base.metadata.tables)
    assert await migrate.current_revision(database_url) == migrate.head_revision()
    migrate.downgrade(database_url, "base")
    assert await _tables(database_url) == set()
    assert await migrate.current_revision(database_url) is None


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert await _diff(database_url) == []


async def test_upgrade_is_idempotent(database_url: str) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)
    assert await migrate.current_revision(database_url) == migrate.head_revision()
