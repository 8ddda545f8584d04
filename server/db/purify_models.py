"""Purification storage: content-addressed face crops and one result row per (crop, purifier, detector).

Both live in the database so a worker on another host reads the crops and writes the results
without a shared filesystem or a result backend.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models import Base, utcnow


class PurifyStatus:
    """States of a purification row; only DONE and FAILED are results."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    FINAL = (DONE, FAILED)


class Crop(Base):
    """One face crop as a lossless PNG, keyed by the SHA-256 of its pixels."""

    __tablename__ = "crops"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Purification(Base):
    """The purified score of one crop under one purifier and detector version.

    A row is ``running`` while attempts are made (``attempts`` counts them, so a crop that
    kills its worker every time is given up on) and becomes ``done`` or ``failed`` once; the
    first final write wins and later ones are no-ops.
    """

    __tablename__ = "purifications"

    # sha256 ":" purifier version ":" detector id@version
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # No foreign key: a result saying "crop not found" must be storable too.
    crop_sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=PurifyStatus.RUNNING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    purified_score: Mapped[float | None] = mapped_column(Float)
    iterations: Mapped[int | None] = mapped_column(Integer)
    stopped_by: Mapped[str | None] = mapped_column(String(32))
    seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    purified_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
