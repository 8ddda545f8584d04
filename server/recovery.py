"""Start-up recovery: checks a previous run of this instance left active end with one outcome.

A check accepted with 202 must end with exactly one verdict or an explicit failure, even when
the server died mid-check. At start, for this instance's active checks:

* an upload whose spool file survived complete (its size is the recorded ``size_bytes``) is
  analysed again from that file (its partial frames are dropped first, so it ends with one
  clean set of frames and one verdict);
* a URL check is fetched again from its stored (canonical) URL under the same id, in the
  background so that start-up does not wait on the upstream; if the URL now fails, the check
  fails with that reason;
* a frames check (client-captured frames) is finalised with the frames already stored;
* anything else (an upload cut off mid-way) fails with an explicit message.

Upload spools are named by check id (``spool_path``) once the check exists, so they can be
found here; the ones no active check claims are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.analysis.frames import FrameResult
from server.db import repo
from server.db.models import Check, CheckStatus, Frame
from server.jobs import Job, JobManager

_LOGGER = logging.getLogger(__name__)

SPOOL_SUFFIX = ".upload"

# Fetches a URL check again and starts its job (server.api.url_checks.resume_url_check).
Refetch = Callable[[Check], Awaitable[None]]


def spool_dir(data_dir: Path) -> Path:
    """Where upload spools live (the same folder as the anonymous ``.part`` spools)."""
    return data_dir / "uploads"


def spool_path(data_dir: Path, check_id: str) -> Path:
    """The spool file of the upload of check ``check_id``, kept until the check finishes."""
    return spool_dir(data_dir) / f"check-{check_id}{SPOOL_SUFFIX}"


async def recover(
    jobs: JobManager,
    sessions: async_sessionmaker,
    data_dir: Path,
    owner: str,
    refetch: Refetch | None = None,
) -> dict[str, int]:
    """Re-run, re-fetch, finalise or fail every active check of ``owner``; counts by outcome.

    Without ``refetch`` URL checks fail with an explicit message instead of being fetched again.
    """
    async with sessions() as s:
        checks = list(
            (await s.execute(select(Check).where(Check.status.in_(CheckStatus.ACTIVE), Check.owner == owner)))
            .scalars()
            .all()
        )
    counts = {"rerun": 0, "refetched": 0, "finalised": 0, "failed": 0}
    claimed: set[Path] = set()
    for check in checks:
        try:
            outcome = await _recover_one(jobs, sessions, data_dir, check, claimed, refetch)
        except Exception:  # one bad row must not keep the server from starting
            _LOGGER.exception("check %s: recovery failed", check.id)
            outcome = "failed"
            with contextlib.suppress(Exception):
                await repo.fail_check(sessions, check.id, "interrupted", _message(check))
        counts[outcome] += 1
    folder = spool_dir(data_dir)
    if folder.is_dir():
        for stale in folder.glob(f"check-*{SPOOL_SUFFIX}"):
            if stale not in claimed:
                stale.unlink(missing_ok=True)
    if checks:
        _LOGGER.warning("recovered interrupted checks: %s", counts)
    return counts


async def _recover_one(
    jobs: JobManager,
    sessions: async_sessionmaker,
    data_dir: Path,
    check: Check,
    claimed: set[Path],
    refetch: Refetch | None,
) -> str:
    path = spool_path(data_dir, check.id)
    if (
        check.source == "upload"
        and check.size_bytes
        and path.is_file()
        and path.stat().st_size == check.size_bytes
    ):
        await _reset(sessions, check.id)
        claimed.add(path)
        sha256 = check.sha256
        jobs.start(
            check.id,
            str(path),
            container=check.container,
            cleanup=lambda: path.unlink(missing_ok=True),
            keys=lambda: [("sha256", sha256)] if sha256 else [],
            request_id=check.request_id,
        )
        return "rerun"
    if check.source == "url" and check.source_url and refetch is not None:
        await _reset(sessions, check.id)
        task = asyncio.create_task(_refetch(refetch, sessions, check), name=f"refetch-{check.id}")
        jobs.resuming.add(task)
        task.add_done_callback(jobs.resuming.discard)
        return "refetched"
    if check.source == "frames":
        results = await _stored_frames(sessions, check.id)
        if results:
            await _finalise_frames(jobs, check.id, results)
            return "finalised"
    await repo.fail_check(sessions, check.id, "interrupted", _message(check))
    return "failed"


async def _refetch(refetch: Refetch, sessions: async_sessionmaker, check: Check) -> None:
    """Fetch a URL check again; an unexpected error fails it (a shutdown leaves it queued for next start)."""
    try:
        await refetch(check)
    except asyncio.CancelledError:
        raise
    except Exception:
        _LOGGER.exception("check %s: fetching the URL again failed", check.id)
        await repo.fail_check(sessions, check.id, "interrupted", _message(check))


def _message(check: Check) -> str:
    """Why a check could not be recovered, for its error message."""
    if check.source == "url":
        return "the server restarted while fetching this URL; submit it again"
    if check.source == "upload":
        return "the server restarted before the upload was complete; upload the video again"
    if check.source == "frames":
        return "the server restarted before any frame of this check was stored; send the frames again"
    return "the server restarted before this check finished"


async def _reset(sessions: async_sessionmaker, check_id: str) -> None:
    """Back to queued, without the partial frames of the interrupted run."""
    async with sessions() as s, s.begin():
        await s.execute(delete(Frame).where(Frame.check_id == check_id))
        await s.execute(
            update(Check).where(Check.id == check_id).values(status=CheckStatus.QUEUED, frames_analyzed=0)
        )


async def _stored_frames(sessions: async_sessionmaker, check_id: str) -> list[FrameResult]:
    """The frames a check stored before the restart, as results to aggregate."""
    async with sessions() as s:
        rows = (await s.execute(select(Frame).where(Frame.check_id == check_id).order_by(Frame.t))).scalars()
        return [
            FrameResult(
                index=f.index,
                t=f.t,
                score=f.score,
                boxes=list(f.boxes or []),
                face_scores=list(f.face_scores or []),
                tamper=f.tamper,
                purified_score=f.purified_score,
                purify_status=f.purify_status,
                phash=f.phash,
            )
            for f in rows
        ]


async def _finalise_frames(jobs: JobManager, check_id: str, results: list[FrameResult]) -> None:
    """Aggregate and store the verdict of a frames check from its stored frames."""
    job = Job(id=check_id, status=CheckStatus.RUNNING, frames_mode=True)
    job.results = results
    jobs.jobs[check_id] = job
    try:
        await jobs._complete(  # the same path a live frames check ends through
            job,
            results,
            timings={"decode": 0.0, "detect": 0.0, "total": 0.0, "recovered_at": time.time()},
            media={"container": "frames", "frames_received": len(results), "recovered": True},
        )
    finally:
        job.done.set()
        jobs.jobs.pop(check_id, None)
