"""Crops and purification results in the database: content-addressed, race-safe, idempotent.

The async functions take a session factory (the server's); ``PurifyStore`` runs the same
functions on its own event loop for synchronous callers (the Celery worker). Every write is one
``INSERT … ON CONFLICT`` statement, so concurrent servers and redelivered tasks never clash and
a result is either fully written or absent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.engine import create_engine, session_factory
from server.db.purify_models import Crop, Purification, PurifyStatus

# PNG is lossless at every level; level 1 is ~5x faster to write than the default 3 and
# face crops are small, so the few extra bytes do not matter.
PNG_COMPRESSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


def crop_key(crop: np.ndarray) -> str:
    """SHA-256 of the crop's pixels and shape (not of its PNG, whose bytes vary by encoder)."""
    _check_crop(crop)
    h, w, _ = crop.shape
    digest = hashlib.sha256(f"rgb8:{h}x{w}:".encode())
    digest.update(np.ascontiguousarray(crop).data)
    return digest.hexdigest()


def result_key(crop_sha256: str, purifier_version: str, detector_ref: str) -> str:
    """The purification key: one result per crop, purifier version and detector version."""
    return f"{crop_sha256}:{purifier_version}:{detector_ref}"


def detector_ref(card: Any) -> str:
    """``id@version`` of a model card, the detector part of a result key."""
    return f"{card.id}@{card.version}"


def _check_crop(crop: np.ndarray) -> None:
    if not (
        isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3
    ):
        raise ValueError("a crop must be an HxWx3 uint8 RGB array")


def encode_png(crop: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB crop."""
    _check_crop(crop)
    ok, buf = cv2.imencode(
        ".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    )
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """The RGB uint8 array of PNG bytes."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable PNG")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A final purification result to store (``status`` is done or failed)."""

    key: str
    crop_sha256: str
    status: str
    purified_score: float | None = None
    iterations: int | None = None
    stopped_by: str | None = None
    seconds: float | None = None
    error: str | None = None
    purified_png: bytes | None = None

    @classmethod
    def failed(cls, key: str, crop_sha256: str, error: str) -> Outcome:
        """A failed result with the reason a user will read."""
        return cls(key=key, crop_sha256=crop_sha256, status=PurifyStatus.FAILED, error=error)


def _insert(s: AsyncSession) -> Any:
    # ON CONFLICT has the same shape on both dialects but lives in dialect-specific constructs.
    return sqlite.insert if s.bind.dialect.name == "sqlite" else postgresql.insert


async def put_crops(sessions: async_sessionmaker, crops: Sequence[np.ndarray]) -> list[str]:
    """Store crops (each once, whoever comes first) and return their keys in order."""
    keys = [crop_key(c) for c in crops]
    rows: dict[str, dict[str, Any]] = {}
    for key, crop in zip(keys, crops, strict=True):
        if key not in rows:
            h, w, _ = crop.shape
            rows[key] = {
                "sha256": key,
                "png": encode_png(crop),
                "width": w,
                "height": h,
                "created_at": _now(),
            }
    if rows:
        async with sessions() as s, s.begin():
            stmt = _insert(s)(Crop).values(list(rows.values()))
            await s.execute(stmt.on_conflict_do_nothing(index_elements=["sha256"]))
    return keys


async def get_crops(sessions: async_sessionmaker, shas: Iterable[str]) -> dict[str, np.ndarray]:
    """The stored crops among ``shas`` (missing ones are absent from the result)."""
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    async with sessions() as s:
        rows = (await s.execute(select(Crop.sha256, Crop.png).where(Crop.sha256.in_(wanted)))).all()
    return {sha: decode_png(png) for sha, png in rows}


async def begin_attempts(sessions: async_sessionmaker, keys: Mapping[str, str]) -> dict[str, int]:
    """Count one more attempt for each key (key → crop sha) still running; returns key → attempts.

    Keys that already have a final result keep their count and are left out of the answer.
    """
    if not keys:
        return {}
    now = _now()
    rows = [
        {"key": k, "crop_sha256": sha, "status": PurifyStatus.RUNNING, "attempts": 1, "created_at": now}
        for k, sha in keys.items()
    ]
    async with sessions() as s, s.begin():
        stmt = _insert(s)(Purification).values(rows)
        await s.execute(
            stmt.on_conflict_do_update(
                index_elements=["key"],
                set_={"attempts": Purification.attempts + 1},
                where=Purification.status == PurifyStatus.RUNNING,
            )
        )
        found = await s.execute(
            select(Purification.key, Purification.attempts).where(
                Purification.key.in_(list(keys)), Purification.status == PurifyStatus.RUNNING
            )
        )
        return {k: n for k, n in found.all()}


async def save_results(sessions: async_sessionmaker, outcomes: Sequence[Outcome]) -> int:
    """Store final results; a key that already has one keeps it. Returns how many were written."""
    if not outcomes:
        return 0
    now = _now()
    rows = [
        {
            "key": o.key,
            "crop_sha256": o.crop_sha256,
            "status": o.status,
            "attempts": 0,
            "purified_score": o.purified_score,
            "iterations": o.iterations,
            "stopped_by": o.stopped_by,
            "seconds": o.seconds,
            "error": o.error,
            "purified_png": o.purified_png,
            "created_at": now,
            "finished_at": now,
        }
        for o in {o.key: o for o in outcomes}.values()
    ]
    final_columns = (
        "status",
        "purified_score",
        "iterations",
        "stopped_by",
        "seconds",
        "error",
        "purified_png",
        "finished_at",
    )
    async with sessions() as s, s.begin():
        stmt = _insert(s)(Purification).values(rows)
        result = await s.execute(
            stmt.on_conflict_do_update(
                index_elements=["key"],
                set_={c: stmt.excluded[c] for c in final_columns},
                # First final writer wins: a running row is finished, a finished one never changes.
                where=Purification.status == PurifyStatus.RUNNING,
            )
        )
    return max(result.rowcount or 0, 0)


async def get_results(sessions: async_sessionmaker, keys: Iterable[str]) -> dict[str, Purification]:
    """The final results (done or failed) among ``keys``."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    async with sessions() as s:
        rows = await s.execute(
            select(Purification).where(
                Purification.key.in_(wanted), Purification.status.in_(PurifyStatus.FINAL)
            )
        )
        return {r.key: r for r in rows.scalars()}


class PurifyStore:
    """The same operations for synchronous code, on a private event loop and engine.

    Create it in the process that uses it (after a fork), and ``close()`` it there.
    """

    def __init__(self, database_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._engine = create_engine(database_url)
        self._sessions = session_factory(self._engine)

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def put_crops(self, crops: Sequence[np.ndarray]) -> list[str]:
        """See ``put_crops``."""
        return self._run(put_crops(self._sessions, crops))

    def get_crops(self, shas: Iterable[str]) -> dict[str, np.ndarray]:
        """See ``get_crops``."""
        return self._run(get_crops(self._sessions, shas))

    def begin_attempts(self, keys: Mapping[str, str]) -> dict[str, int]:
        """See ``begin_attempts``."""
        return self._run(begin_attempts(self._sessions, keys))

    def save_results(self, outcomes: Sequence[Outcome]) -> int:
        """See ``save_results``."""
        return self._run(save_results(self._sessions, outcomes))

    def get_results(self, keys: Iterable[str]) -> dict[str, Purification]:
        """See ``get_results``."""
        return self._run(get_results(self._sessions, keys))

    def close(self) -> None:
        """Dispose of the engine and the loop."""
        try:
            self._run(self._engine.dispose())
        finally:
            self._loop.close()
