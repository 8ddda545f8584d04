"""API tokens: only the SHA-256 of each secret is stored, never the secret itself."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models import Base, utcnow


class ApiToken(Base):
    """One bearer token of the API; revoked tokens stay as rows so their use stays auditable."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Unique among active tokens (checked on create); a revoked token's name may be reused.
    name: Mapped[str] = mapped_column(String(64), index=True)
    # Hex SHA-256 of the secret: a leaked database does not leak usable tokens.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    # The secret's first characters, so a person can tell tokens apart in lists and logs.
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Written at most once a minute per token, so authentication costs no write per request.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # NULL: the server's defaults (settings rate_per_minute / max_concurrent_checks_per_token).
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_checks: Mapped[int | None] = mapped_column(Integer)
