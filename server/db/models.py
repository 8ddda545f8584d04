"""SQLAlchemy 2 models: checks, their sampled frames, and verdicts.

The schema is created and changed only by Alembic (migrations/); the app never calls
``create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
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
    RECEIVING = "receiving"  # a frames check waiting for the client's captured frames
    RUNNING = "running"
    PURIFYING = "purifying"
    DONE = "done"
    FAILED = "failed"
    ACTIVE = (QUEUED, RECEIVING, RUNNING, PURIFYING)
    ALL = (QUEUED, RECEIVING, RUNNING, PURIFYING, DONE, FAILED)


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
    phash: Mapped[int | None] = mapped_column(BigInteger)

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


class CacheKey(Base):
    """An exact key (canonical URL, platform video id, SHA-256 of the bytes) → a verdict's check.

    ``model_ref`` is part of every key: a verdict is only ever served for the detector
    (id, version and weights) that produced it.
    """

    __tablename__ = "cache_keys"
    __table_args__ = (UniqueConstraint("kind", "value", "model_ref", name="uq_cache_keys_kind_value_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # url | video_id | sha256
    value: Mapped[str] = mapped_column(String(2048))
    model_ref: Mapped[str] = mapped_column(String(200))
    check_id: Mapped[str] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class FrameHash(Base):
    """One sampled frame's perceptual hash of a cached verdict, split into indexed bands.

    Near-duplicate look-up collects candidates that share any 16-bit band with a query hash
    (index seeks, never a table scan), then confirms by Hamming distance over the sequence. Each
    band index also holds ``expires_at`` and ``check_id``, so the candidate query reads only the
    index (migration 0006).
    """

    __tablename__ = "frame_hashes"
    __table_args__ = tuple(
        Index(f"ix_frame_hashes_b{i}", "model_ref", f"b{i}", "expires_at", "check_id") for i in range(4)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    check_id: Mapped[str] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"), index=True)
    model_ref: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(Integer)
    t: Mapped[float] = mapped_column(Float)
    phash: Mapped[int] = mapped_column(BigInteger)
    b0: Mapped[int] = mapped_column(Integer)
    b1: Mapped[int] = mapped_column(Integer)
    b2: Mapped[int] = mapped_column(Integer)
    b3: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


from server.db import (  # noqa: E402  (each module registers its tables on Base.metadata)
    auth_models,  # noqa: F401  (api_tokens)
    purify_models,  # noqa: F401  (crops, purifications)
    thumbnails,  # noqa: F401  (report-page thumbnails)
)
