"""API tokens: create, verify, revoke and list them; the errors access control raises.

A token is ``unm_`` + 32 random bytes (URL-safe base64). The database keeps only its SHA-256:
the secret is printed once by ``unmask token create`` and cannot be recovered. A slow password
hash is not needed: 256 random bits cannot be guessed, so a fast hash is as safe and keeps
verification cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.db.auth_models import ApiToken
from server.db.models import utcnow
from server.errors import Conflict, InvalidField, NotFound, UnmaskError
from server.settings import Settings

_LOGGER = logging.getLogger(__name__)

TOKEN_PREFIX = "unm_"
TOKEN_BYTES = 32
# "unm_" + 43 base64url characters; anything else is rejected before touching the database.
TOKEN_CHARS = len(TOKEN_PREFIX) + 43
# Characters of the secret kept for display: "unm_" + 8 random ones (48 bits), enough to
# tell tokens apart and to revoke by prefix, far too few to help guess the rest.
PREFIX_CHARS = 12
MAX_NAME_CHARS = 64

# A verified token is trusted from memory this long, so requests cost no database read;
# a revoked token therefore keeps working for at most this long on each server process.
VERIFY_CACHE_TTL_S = 5.0
VERIFY_CACHE_MAX = 10_000

# last_used_at is written at most this often per token (it is for audits, not accounting).
LAST_USED_RESOLUTION_S = 60.0

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class Unauthorized(UnmaskError):
    """No valid API token: missing, unknown, malformed or revoked."""

    status, code = 401, "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        """RFC 6750: tell the client which scheme to use."""
        return {"WWW-Authenticate": 'Bearer realm="unmask"'}


class RateLimited(UnmaskError):
    """The token (or client) spent its request budget; retry after ``retry_after_s``."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, **details: object) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        """RFC 9110 Retry-After in whole seconds."""
        return {"Retry-After": str(self.retry_after_s)}


class TooManyChecks(RateLimited):
    """The token already has its maximum number of checks running."""

    code = "too_many_checks"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a request learns about its verified token (never the secret or its hash)."""

    id: int
    name: str
    prefix: str
    rate_per_minute: int | None
    max_concurrent_checks: int | None
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @classmethod
    def from_row(cls, row: ApiToken) -> TokenInfo:
        """Copy the safe fields of a row."""
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            rate_per_minute=row.rate_per_minute,
            max_concurrent_checks=row.max_concurrent_checks,
            created_at=_aware(row.created_at),
            revoked_at=_aware(row.revoked_at),
            last_used_at=_aware(row.last_used_at),
        )


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def hash_secret(secret: str) -> str:
    """The stored form of a token: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_token(secret: str) -> bool:
    """Shape check only (prefix and length); says nothing about validity."""
    return len(secret) == TOKEN_CHARS and secret.startswith(TOKEN_PREFIX) and secret.isascii()


def auth_required(settings: Settings) -> bool:
    """Whether requests need a token: ``auto`` means when the server listens beyond loopback."""
    if settings.auth != "auto":
        return settings.auth == "always"
    return not is_loopback(settings.host)


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) and localhost; an empty host (all interfaces) is not."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _check_limits(rate_per_minute: int | None, max_concurrent_checks: int | None) -> None:
    if rate_per_minute is not None and not 0 < rate_per_minute <= 1_000_000:
        raise InvalidField("rate: requests per minute must be in (0, 1000000]", field="rate")
    if max_concurrent_checks is not None and not 0 < max_concurrent_checks <= 10_000:
        raise InvalidField("max concurrent checks must be in (0, 10000]", field="max_concurrent")


async def create_token(
    sessions: async_sessionmaker,
    name: str,
    *,
    rate_per_minute: int | None = None,
    max_concurrent_checks: int | None = None,
) -> tuple[str, TokenInfo]:
    """Make a token named ``name``; returns the secret (shown once) and its stored description."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidField(f"name: 1 to {MAX_NAME_CHARS} printable characters", field="name")
    if name.startswith(TOKEN_PREFIX):
        raise InvalidField(
            f"name: must not start with {TOKEN_PREFIX!r} (it would read as a prefix)", field="name"
        )
    _check_limits(rate_per_minute, max_concurrent_checks)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    async with sessions() as session, session.begin():
        taken = await session.scalar(
            select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        )
        if taken is not None:
            raise Conflict(f"an active token named {name!r} exists; revoke it first or pick another name")
        row = ApiToken(
            name=name,
            token_hash=hash_secret(secret),
            prefix=secret[:PREFIX_CHARS],
            rate_per_minute=rate_per_minute,
            max_concurrent_checks=max_concurrent_checks,
        )
        session.add(row)
        await session.flush()
        info = TokenInfo.from_row(row)
    return secret, info


async def revoke_token(sessions: async_sessionmaker, name_or_prefix: str) -> TokenInfo:
    """Revoke the one active token with this name or display prefix."""
    key = name_or_prefix.strip()
    async with sessions() as session, session.begin():
        rows = (
            await session.scalars(
                select(ApiToken).where(
                    ApiToken.revoked_at.is_(None), or_(ApiToken.name == key, ApiToken.prefix == key)
                )
            )
        ).all()
        if not rows:
            raise NotFound(f"no active token named or prefixed {key!r}")
        if len(rows) > 1:
            raise Conflict(f"{key!r} matches {len(rows)} active tokens; give the display prefix instead")
        rows[0].revoked_at = utcnow()
        await session.flush()
        return TokenInfo.from_row(rows[0])


async def list_tokens(sessions: async_sessionmaker, *, include_revoked: bool = True) -> list[TokenInfo]:
    """Every token, oldest first."""
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    async with sessions() as session:
        return [TokenInfo.from_row(row) for row in (await session.scalars(query)).all()]


async def verify(sessions: async_sessionmaker, secret: str) -> TokenInfo | None:
    """The active token whose secret this is, or None; notes its use (at most once a minute)."""
    if not looks_like_token(secret):
        return None
    digest = hash_secret(secret)
    async with sessions() as session:
        # Looked up by the hash, so timing reveals at most something about a SHA-256 output,
        # never about the secret; the final compare is constant-time all the same.
        row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
            return None
        last = _aware(row.last_used_at)
        now = utcnow()
        if last is None or now - last >= timedelta(seconds=LAST_USED_RESOLUTION_S):
            row.last_used_at = now
            info = TokenInfo.from_row(row)
            try:
                await session.commit()
            except DBAPIError as exc:  # an audit field never fails the request (e.g. SQLite busy)
                _LOGGER.warning("token %s: could not note its use (%s)", info.prefix, type(exc).__name__)
            return info
        return TokenInfo.from_row(row)


class TokenVerifier:
    """``verify`` with a short in-memory cache of verified tokens (``VERIFY_CACHE_TTL_S``)."""

    def __init__(self, ttl_s: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = VERIFY_CACHE_TTL_S if ttl_s is None else ttl_s
        self._clock = clock
        # hash of the secret -> (token, monotonic expiry); only successes are cached.
        self._cache: dict[str, tuple[TokenInfo, float]] = {}

    async def verify(self, sessions: async_sessionmaker, secret: str) -> TokenInfo | None:
        """The token for ``secret``, from memory when verified less than ``ttl_s`` ago."""
        if not looks_like_token(secret):
            return None
        digest = hash_secret(secret)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        self._cache.pop(digest, None)
        info = await verify(sessions, secret)
        if info is not None and self.ttl_s > 0:
            if len(self._cache) >= VERIFY_CACHE_MAX:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
                if len(self._cache) >= VERIFY_CACHE_MAX:
                    self._cache.clear()
            self._cache[digest] = (info, now + self.ttl_s)
        return info

    def forget(self, token_id: int) -> None:
        """Drop a token from memory at once (a revocation made by this process)."""
        self._cache = {k: v for k, v in self._cache.items() if v[0].id != token_id}
