"""Small JPEGs a report page shows: face frames with their boxes, original and purified crops.

An uploaded video is deleted once its check ends, so the report cannot cut faces out of it
later: the job stores a few thumbnails while it still has the frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from server import limits
from server.db.models import Base, utcnow


class ThumbnailKind:
    """What a thumbnail shows."""

    FACE = "face"  # the sampled frame, scaled down; ``boxes`` in thumbnail pixels
    ORIGINAL = "original"  # a face crop as the detector saw it
    PURIFIED = "purified"  # the same crop after purification
    ALL = (FACE, ORIGINAL, PURIFIED)


class Thumbnail(Base):
    """One thumbnail of one sampled frame of a check."""

    __tablename__ = "thumbnails"
    __table_args__ = (UniqueConstraint("check_id", "index", "kind", name="uq_thumbnails_check_index_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    check_id: Mapped[str] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    t: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    boxes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True, slots=True)
class ThumbnailItem:
    """A thumbnail ready to store (see ``server.report.thumbs`` for making one from pixels)."""

    index: int
    t: float
    kind: str
    jpeg: bytes
    width: int
    height: int
    boxes: list[list[int]] = field(default_factory=list)


def _valid(item: ThumbnailItem) -> bool:
    return (
        item.kind in ThumbnailKind.ALL
        and item.jpeg[:3] == b"\xff\xd8\xff"
        and len(item.jpeg) <= limits.MAX_THUMBNAIL_BYTES
        and 0 < item.width <= limits.THUMBNAIL_MAX_SIDE
        and 0 < item.height <= limits.THUMBNAIL_MAX_SIDE
    )


async def save_thumbnails(sessions: async_sessionmaker, check_id: str, items: Iterable[ThumbnailItem]) -> int:
    """Store thumbnails of a check; returns how many were written.

    Items that are not small JPEGs are dropped, at most ``MAX_THUMBNAILS_PER_CHECK`` are kept,
    and one already stored for (index, kind) stays as it is, so a retried call is harmless.
    """
    rows = [
        {
            "check_id": check_id,
            "index": i.index,
            "kind": i.kind,
            "t": float(i.t),
            "width": i.width,
            "height": i.height,
            "boxes": [list(map(int, b)) for b in i.boxes],
            "jpeg": i.jpeg,
            "created_at": utcnow(),
        }
        for i in items
        if _valid(i)
    ]
    if not rows:
        return 0
    written = 0
    async with sessions() as s, s.begin():
        stored = (
            await s.execute(select(Thumbnail.index, Thumbnail.kind).where(Thumbnail.check_id == check_id))
        ).all()
        room = limits.MAX_THUMBNAILS_PER_CHECK - len(stored)
        insert = pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert
        for row in rows[: max(0, room)]:
            stmt = (
                insert(Thumbnail)
                .values(**row)
                .on_conflict_do_nothing(index_elements=["check_id", "index", "kind"])
            )
            written += (await s.execute(stmt)).rowcount or 0
    return written


async def get_thumbnails(sessions: async_sessionmaker, check_id: str) -> list[Thumbnail]:
    """Every thumbnail of a check, by frame index then kind."""
    async with sessions() as s:
        rows = await s.execute(
            select(Thumbnail).where(Thumbnail.check_id == check_id).order_by(Thumbnail.index, Thumbnail.kind)
        )
        return list(rows.scalars())
