"""The verdict cache: exact keys (URL, video id, SHA-256) and near-duplicate frame look-up.

Every key carries ``model_ref`` (detector id, version and weights hash): a verdict made by one
model is never served as another's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.db.models import CacheKey, Check, CheckStatus, FrameHash, Verdict
from server.vision.card import ModelCard
from server.vision.phash import bands, hamming, to_signed, to_unsigned

# A frame of a re-encode / resize / small crop stays within this many of 64 bits of the
# original (measured: re-encodes 0–2, a 4 % crop 4–14); unrelated frames differ by ~32.
FRAME_MATCH_BITS = 12

# Query hashes used for a near-duplicate look-up: enough to survive a trimmed start, few
# enough to keep the candidate query small.
MAX_QUERY_HASHES = 32

# Candidate checks confirmed by full sequence comparison, best band-hit counts first.
MAX_CANDIDATES = 16

# A candidate is the same video when at least this share of the overlapping query frames
# match, and at least MIN_MATCHED_FRAMES do.
MIN_MATCH_FRACTION = 0.6
MIN_MATCHED_FRAMES = 3

# Sampling phase differs between encodes (and a trimmed copy starts mid-GOP): a query frame
# may meet its original one sample early or late.
ALIGN_SLACK = 1


def model_ref(card: ModelCard) -> str:
    """The model part of every key: id, version and the weights' hash prefix."""
    return f"{card.id}@{card.version}#{card.weights_sha256[:12]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands naive datetimes back; they were written as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CacheHit:
    """A cached verdict and how it was found."""

    check_id: str
    kind: str
    verdict: dict[str, Any]
    matched_frames: int | None = None
    query_frames: int | None = None

    def as_verdict(self) -> dict[str, Any]:
        """The stored verdict marked as served from cache."""
        out = dict(self.verdict)
        out["cached"] = True
        out["cache"] = {
            "check_id": self.check_id,
            "matched_by": self.kind,
            **(
                {"matched_frames": self.matched_frames, "query_frames": self.query_frames}
                if self.matched_frames is not None
                else {}
            ),
        }
        return out


async def _verdict_of(session, check_id: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    row = await session.execute(select(Verdict.payload).where(Verdict.check_id == check_id))
    return row.scalar_one_or_none()


async def store(
    sessions: async_sessionmaker,
    check_id: str,
    ref: str,
    keys: Iterable[tuple[str, str]],
    frame_hashes: Sequence[tuple[int, float, int]],
    ttl: timedelta,
) -> list[dict[str, Any]]:
    """Index a finished check's verdict under ``keys`` and its sampled frame hashes.

    A key already pointing at another verdict is moved to this newer one. Returns the key list
    for the verdict's ``keys`` field.
    """
    expires = _now() + ttl
    described: list[dict[str, Any]] = []
    async with sessions() as s, s.begin():
        dialect = s.bind.dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        for kind, value in dict.fromkeys(keys):
            stmt = insert(CacheKey).values(
                kind=kind,
                value=value,
                model_ref=ref,
                check_id=check_id,
                created_at=_now(),
                expires_at=expires,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["kind", "value", "model_ref"],
                set_={"check_id": check_id, "created_at": _now(), "expires_at": expires},
            )
            await s.execute(stmt)
            described.append({"kind": kind, "value": value})
        if frame_hashes:
            await s.execute(delete(FrameHash).where(FrameHash.check_id == check_id))
            s.add_all(
                FrameHash(
                    check_id=check_id,
                    model_ref=ref,
                    seq=seq,
                    t=t,
                    phash=to_signed(h),
                    b0=b[0],
                    b1=b[1],
                    b2=b[2],
                    b3=b[3],
                    expires_at=expires,
                )
                for seq, t, h in frame_hashes
                for b in [bands(to_unsigned(h))]
            )
            described.append({"kind": "frames", "count": len(frame_hashes)})
    return described


async def lookup_key(sessions: async_sessionmaker, kind: str, value: str, ref: str) -> CacheHit | None:
    """The verdict stored under an exact key, unless expired."""
    # One indexed round trip: the key joined to its verdict (this is the hot path of every badge).
    async with sessions() as s:
        row = (
            await s.execute(
                select(CacheKey.check_id, CacheKey.expires_at, Verdict.payload)
                .join(Verdict, Verdict.check_id == CacheKey.check_id)
                .where(CacheKey.kind == kind, CacheKey.value == value, CacheKey.model_ref == ref)
            )
        ).first()
    if row is None or _aware(row.expires_at) <= _now():
        return None
    return CacheHit(row.check_id, kind, row.payload)


def _best_alignment(query: Sequence[int], stored: dict[int, int]) -> int:
    """Most query frames matching the stored sequence under one offset (± ALIGN_SLACK).

    Offsets are voted for by matching frame pairs first, so only plausible alignments are
    scored (a long stored video has thousands of possible offsets).
    """
    votes: Counter[int] = Counter()
    for qi, qh in enumerate(query):
        for sq, sh in stored.items():
            if hamming(qh, sh) <= FRAME_MATCH_BITS:
                votes[sq - qi] += 1
    best = 0
    for offset, _ in votes.most_common(8):
        matched = sum(
            1
            for qi, qh in enumerate(query)
            if any(
                (qi + offset + d) in stored and hamming(qh, stored[qi + offset + d]) <= FRAME_MATCH_BITS
                for d in range(-ALIGN_SLACK, ALIGN_SLACK + 1)
            )
        )
        best = max(best, matched)
    return best


async def lookup_frames(sessions: async_sessionmaker, hashes: Sequence[int], ref: str) -> CacheHit | None:
    """The cached verdict of a near-duplicate of the video these sampled-frame hashes came from."""
    query = [to_unsigned(h) for h in hashes[:MAX_QUERY_HASHES]]
    if len(query) < MIN_MATCHED_FRAMES:
        return None
    band_sets = [sorted({bands(h)[i] for h in query}) for i in range(4)]
    columns = (FrameHash.b0, FrameHash.b1, FrameHash.b2, FrameHash.b3)
    now = _now()
    async with sessions() as s:
        # Candidates: one index seek per band on (model_ref, band), combined with UNION ALL so
        # every database plans four seeks (an OR of the bands made SQLite scan the model's rows).
        hits = union_all(
            *(
                select(FrameHash.check_id).where(
                    FrameHash.model_ref == ref, col.in_(vals), FrameHash.expires_at > now
                )
                for col, vals in zip(columns, band_sets, strict=True)
            )
        ).subquery()
        rows = await s.execute(
            select(hits.c.check_id, func.count())
            .group_by(hits.c.check_id)
            .order_by(func.count().desc())
            .limit(MAX_CANDIDATES)
        )
        candidates = [r[0] for r in rows]
        if not candidates:
            return None
        stored: dict[str, dict[int, int]] = defaultdict(dict)
        for check_id, seq, h in await s.execute(
            select(FrameHash.check_id, FrameHash.seq, FrameHash.phash).where(
                FrameHash.check_id.in_(candidates)
            )
        ):
            stored[check_id][seq] = to_unsigned(h)
        best: tuple[int, str] | None = None
        for check_id in candidates:
            seqs = stored[check_id]
            overlap = min(len(query), len(seqs))
            matched = _best_alignment(query, seqs)
            if (
                matched >= MIN_MATCHED_FRAMES
                and matched >= MIN_MATCH_FRACTION * overlap
                and (best is None or matched > best[0])
            ):
                best = (matched, check_id)
        if best is None:
            return None
        verdict = await _verdict_of(s, best[1])
    if verdict is None:
        return None
    return CacheHit(best[1], "frames", verdict, matched_frames=best[0], query_frames=len(query))


async def invalidate(
    sessions: async_sessionmaker,
    *,
    check_id: str | None = None,
    kind: str | None = None,
    value: str | None = None,
) -> int:
    """Forget cached keys of a check, or one exact key; returns rows removed."""
    removed = 0
    async with sessions() as s, s.begin():
        if check_id is not None:
            removed += (await s.execute(delete(CacheKey).where(CacheKey.check_id == check_id))).rowcount or 0
            removed += (
                await s.execute(delete(FrameHash).where(FrameHash.check_id == check_id))
            ).rowcount or 0
        if kind is not None and value is not None:
            removed += (
                await s.execute(delete(CacheKey).where(CacheKey.kind == kind, CacheKey.value == value))
            ).rowcount or 0
    return removed


async def purge_expired(sessions: async_sessionmaker) -> int:
    """Delete expired keys and frame hashes (a periodic job)."""
    now = _now()
    async with sessions() as s, s.begin():
        n = (await s.execute(delete(CacheKey).where(CacheKey.expires_at <= now))).rowcount or 0
        n += (await s.execute(delete(FrameHash).where(FrameHash.expires_at <= now))).rowcount or 0
    return n


async def active_check_with(
    sessions: async_sessionmaker,
    *,
    ref_id: str,
    ref_version: str,
    source_url: str | None = None,
    sha256: str | None = None,
    exclude: str | None = None,
) -> str | None:
    """An unfinished check of the same video and model (single flight across servers)."""
    conds = [
        Check.status.in_(CheckStatus.ACTIVE),
        Check.model_id == ref_id,
        Check.model_version == ref_version,
    ]
    if source_url is not None:
        conds.append(Check.source_url == source_url)
    elif sha256 is not None:
        conds.append(Check.sha256 == sha256)
    else:
        return None
    if exclude is not None:
        conds.append(Check.id != exclude)
    async with sessions() as s:
        row = await s.execute(select(Check.id).where(*conds).order_by(Check.created_at, Check.id).limit(1))
        return row.scalar_one_or_none()
