"""SQLAlchemy 2 models: checks, their sampled frames, and verdicts.

The schema is created and changed only by Alembic (migrations/); the app never calls
``create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the models use."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base; ``Base.metadata`` is Alembic's target."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class CheckStatus:
    """The states a check moves through (stored as strings)."""

    QUEUED = "queued"
    RUNNING = "running"
    PURIFYING = "purifying"
    DONE = "done"
    FAILED = "failed"
    ACTIVE = (QUEUED, RUNNING, PURIFYING)
    ALL = (QUEUED, RUNNING, PURIFYING, DONE, FAILED)


class Check(Base):
    """One request to judge one video."""

    __tablename__ = "checks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=CheckStatus.QUEUED, index=True)
    source: Mapped[str] = mapped_column(String(16))  # upload | url | frames | file
    source_url: Mapped[str | None] = mapped_column(Text)
    page_url: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    container: Mapped[str | None] = mapped_column(String(32))
    media: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    frames_analyzed: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    # Which server instance runs it, so a restarted instance fails only its own orphans.
    owner: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    frames: Mapped[list[Frame]] = relationship(
        back_populates="check", order_by="Frame.index", cascade="all, delete-orphan"
    )
    verdict: Mapped[Verdict | None] = relationship(back_populates="check", cascade="all, delete-orphan")


class Frame(Base):
    """One sampled frame of a check and what was found in it."""

    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("check_id", "index", name="uq_frames_check_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    check_id: Mapped[str] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    t: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)
    tamper: Mapped[float | None] = mapped_column(Float)
    purified_score: Mapped[float | None] = mapped_column(Float)
    purify_status: Mapped[str | None] = mapped_column(String(16))
    boxes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    face_scores: Mapped[list[Any]] = mapped_column(JSON, default=list)

    check: Mapped[Check] = relationship(back_populates="frames")


class Verdict(Base):
    """The final judgement of a check; ``payload`` is the full verdict object of the API."""

    __tablename__ = "verdicts"
    __table_args__ = (Index("ix_verdicts_model", "model_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    check_id: Mapped[str] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"), unique=True)
    label: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    check: Mapped[Check] = relationship(back_populates="verdict")
