"""Async engine and session factory for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event, make_url, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from server.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")

# How long a background write of a running check (frames, status, verdict, failure) keeps trying
# while the database is unreachable, e.g. a PostgreSQL restart or fail-over, or while SQLite stays
# locked by other writers beyond its busy timeout. Requests do not retry: they fail while the
# database is down, and the pool replaces dead connections (below) once it is back.
DB_RETRY_S = 120.0
SQLITE_BUSY_TIMEOUT_S = 30
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0

# A pooled PostgreSQL connection idle for longer than this is pinged before use (a dead one is
# replaced, so the first request after a database restart does not fail). SQLAlchemy's own
# pool_pre_ping pings on every check-out: with asyncpg that is three round trips (BEGIN, ";",
# ROLLBACK) before every query, which cost a third of a cache look-up's server CPU in
# bench/load.py. A connection in steady use needs none: if the database restarted under it, the
# first statement fails as a disconnect and SQLAlchemy then drops every older connection of the pool.
PING_AFTER_IDLE_S = 1.0

# PostgreSQL connections per process, all kept open (no overflow). With 10 kept and 10 overflow,
# every burst past 10 concurrent queries (a look-up burst after a stall) opened connections and
# closed them again on return: each new one costs PostgreSQL a backend start, the driver its type
# set-up and a fresh prepare of every statement, and bench/cache.py saw ~200 new connections a
# run at 500 near-duplicate look-ups/s. The most connections a process holds is unchanged.
POOL_SIZE = 20

T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the report page read while a check writes; foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # A writer waits this long for the file's write lock (the same as the driver's timeout; 5 s
    # made uploads 500 under bench/load.py's 1000 look-ups/s beside 20 checks).
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.close()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; creates the SQLite file's folder when needed."""
    parsed = make_url(url)
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ConfigError(f"database_url: driver {parsed.drivername!r} is not one of {SUPPORTED_DRIVERS}")
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(url, pool_size=POOL_SIZE, max_overflow=0)
    event.listen(engine.sync_engine.pool, "checkin", _note_idle)
    event.listen(engine.sync_engine.pool, "checkout", _ping_if_idle)
    return engine


def _note_idle(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
    since = record.info.get("idle_since")
    if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
        return
    try:
        dbapi_conn.ping()
    except Exception as exc:  # the pool discards this connection and checks out another
        raise DisconnectionError(f"pooled connection is dead ({type(exc).__name__})") from exc


def _connection_names() -> tuple[str, ...]:
    # asyncpg's server-side refusals while PostgreSQL starts or stops (by class name, so that
    # SQLite-only installs need not import asyncpg).
    return (
        "CannotConnectNowError",
        "AdminShutdownError",
        "CrashShutdownError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "TooManyConnectionsError",
    )


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached or was busy (worth retrying), not a
    bad statement. The failed transaction was rolled back either way."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, DBAPIError) and "database is locked" in str(err.orig):  # SQLite busy
            return True
        if isinstance(err, OSError):  # refused, reset, unreachable, timed out
            return True
        if type(err).__name__ in _connection_names():
            return True
        todo.extend([getattr(err, "orig", None), err.__cause__])
    return False


async def retry_db(
    call: Callable[[], Awaitable[T]], *, what: str = "database write", deadline_s: float = DB_RETRY_S
) -> T:
    """``await call()``, again with back-off while the database is unreachable, for ``deadline_s``.

    ``call`` must be one transaction that is safe to repeat. Errors that are not a lost or refused
    connection (or a locked SQLite file) are raised at once, as is the last one when the deadline
    passes.
    """
    deadline = time.monotonic() + deadline_s
    delay = _RETRY_FIRST_S
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            if attempt == 1:
                _LOGGER.warning("%s: database unreachable or busy (%s), retrying", what, type(exc).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_MAX_S)


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def fill_pool(engine: AsyncEngine) -> None:
    """Open every pooled PostgreSQL connection now, not in the first burst that needs them.

    A connection opened under load costs the server a connect and the driver's type set-up while
    requests queue behind it; in bench/cache.py a 1-2 s host stall (CPU steal) raised concurrent
    look-ups past the 8 connections in use, and the 12 opened then stretched the stall to 126 ms
    p99. Best effort: a database that is down now is retried by the requests themselves.
    """
    if engine.dialect.name != "postgresql":
        return
    conns = []
    try:
        for _ in range(POOL_SIZE):
            conn = await engine.connect()
            conns.append(conn)
            await conn.execute(text("SELECT 1"))
    except Exception:  # any driver error: start anyway, as before
        pass
    finally:
        for conn in conns:
            await conn.close()


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
