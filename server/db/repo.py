"""The queries the service makes; each takes a session factory and owns its transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import selectinload

from server.db.models import Check, CheckStatus, Frame, Verdict


def _now() -> datetime:
    return datetime.now(UTC)


async def create_check(sessions: async_sessionmaker, **fields: Any) -> Check:
    """Insert a check row and return it."""
    async with sessions() as s, s.begin():
        check = Check(**fields)
        s.add(check)
    return check


async def update_check(sessions: async_sessionmaker, check_id: str, **fields: Any) -> None:
    """Set columns of one check."""
    async with sessions() as s, s.begin():
        await s.execute(update(Check).where(Check.id == check_id).values(**fields))


async def add_frames(sessions: async_sessionmaker, check_id: str, frames: Iterable[dict[str, Any]]) -> int:
    """Store sampled-frame results; returns how many were written."""
    rows = [Frame(check_id=check_id, **f) for f in frames]
    if not rows:
        return 0
    async with sessions() as s, s.begin():
        s.add_all(rows)
        await s.execute(
            update(Check)
            .where(Check.id == check_id)
            .values(frames_analyzed=Check.frames_analyzed + len(rows))
        )
    return len(rows)


async def update_frame(sessions: async_sessionmaker, check_id: str, index: int, **fields: Any) -> None:
    """Set columns of one stored frame (purification results arrive after the frame)."""
    async with sessions() as s, s.begin():
        await s.execute(
            update(Frame).where(Frame.check_id == check_id, Frame.index == index).values(**fields)
        )


async def finish_check(sessions: async_sessionmaker, check_id: str, payload: dict[str, Any]) -> None:
    """Store the verdict and mark the check done, in one transaction."""
    model = payload.get("model") or {}
    async with sessions() as s, s.begin():
        s.add(
            Verdict(
                check_id=check_id,
                label=payload["label"],
                score=payload.get("score"),
                confidence=payload.get("confidence"),
                model_id=model.get("id", ""),
                model_version=model.get("version", ""),
                payload=payload,
            )
        )
        await s.execute(
            update(Check).where(Check.id == check_id).values(status=CheckStatus.DONE, finished_at=_now())
        )


async def fail_check(sessions: async_sessionmaker, check_id: str, code: str, message: str) -> None:
    """Mark a check failed with the reason a user will read."""
    await update_check(
        sessions,
        check_id,
        status=CheckStatus.FAILED,
        error_code=code,
        error_message=message,
        finished_at=_now(),
    )


async def get_check(
    sessions: async_sessionmaker, check_id: str, *, with_frames: bool = False
) -> Check | None:
    """One check with its verdict (and frames when asked)."""
    opts = [selectinload(Check.verdict)]
    if with_frames:
        opts.append(selectinload(Check.frames))
    async with sessions() as s:
        return (
            await s.execute(select(Check).where(Check.id == check_id).options(*opts))
        ).scalar_one_or_none()


async def frames_after(sessions: async_sessionmaker, check_id: str, after_index: int) -> list[Frame]:
    """Frames of a check with index > after_index, in order (SSE catch-up from the database)."""
    async with sessions() as s:
        rows = await s.execute(
            select(Frame).where(Frame.check_id == check_id, Frame.index > after_index).order_by(Frame.index)
        )
        return list(rows.scalars())


async def fail_orphaned(sessions: async_sessionmaker, owner: str, message: str) -> int:
    """Mark checks a previous run of this instance left active as failed; returns how many."""
    async with sessions() as s, s.begin():
        result = await s.execute(
            update(Check)
            .where(Check.status.in_(CheckStatus.ACTIVE), Check.owner == owner)
            .values(
                status=CheckStatus.FAILED,
                error_code="interrupted",
                error_message=message,
                finished_at=_now(),
            )
        )
    return result.rowcount or 0
