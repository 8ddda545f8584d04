"""Checks of a video by URL: cache first, join a running check, else fetch and decode as it streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from server.db import cache, repo
from server.db.models import Check
from server.db.urls import canonical_url, platform_video_id
from server.errors import InvalidField, UnmaskError
from server.jobs import Job, new_check_id
from server.keys import fetcher_key, jobs_key, request_id_key, runtime_key, sessions_key, settings_key
from server.media.ingest import Ingest, StreamBudget, open_url
from server.media.source import GrowingFile

_LOGGER = logging.getLogger(__name__)

MAX_URL_CHARS = 2048


def parse_body(body: Any) -> tuple[str, str | None]:
    """The ``url`` and optional ``page_url`` of a JSON check request."""
    if not isinstance(body, dict):
        raise InvalidField('body must be a JSON object like {"url": "https://…/video.mp4"}', field="body")
    url, page_url = body.get("url"), body.get("page_url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidField("url: a non-empty string is required", field="url")
    if len(url) > MAX_URL_CHARS:
        raise InvalidField(f"url: longer than {MAX_URL_CHARS} characters", field="url")
    if page_url is not None and (not isinstance(page_url, str) or len(page_url) > MAX_URL_CHARS):
        raise InvalidField("page_url: a string of at most 2048 characters", field="page_url")
    return url.strip(), page_url


async def start_url_check(
    request: web.Request, url: str, page_url: str | None, *, full: bool = False
) -> tuple[int, dict[str, Any]]:
    """Answer a URL check: (200, cached verdict) | (202, joined or new check)."""
    app = request.app
    sessions, jobs = app[sessions_key], app[jobs_key]
    card = app[runtime_key].detector.card
    canonical = canonical_url(url)
    video_id = platform_video_id(url)
    hit = await jobs.lookup_key("url", canonical)
    if hit is None and video_id is not None:
        hit = await jobs.lookup_key("video_id", video_id)
    if hit is not None:
        return 200, {"id": hit.check_id, "status": "done", "verdict": hit.as_verdict()}
    running = jobs.running_for_url(canonical) or await cache.active_check_with(
        sessions, ref_id=card.id, ref_version=card.version, source_url=canonical
    )
    if running is not None:
        return 202, {"id": running, "status": "running", "joined": True}
    claim = jobs.url_claims.get(canonical)
    if claim is not None:
        # Another request of this process is opening the same URL right now: share its outcome.
        return 202, {"id": await asyncio.shield(claim), "status": "running", "joined": True}
    claim = asyncio.get_running_loop().create_future()
    claim.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no "never retrieved" log
    jobs.url_claims[canonical] = claim
    try:
        status, out = await _fetch_and_start(request, url, page_url, canonical, video_id, full=full)
    except BaseException as exc:
        claim.set_exception(exc if isinstance(exc, Exception) else UnmaskError("request cancelled"))
        raise
    else:
        claim.set_result(out["id"])
        return status, out
    finally:
        jobs.url_claims.pop(canonical, None)


async def _fetch_and_start(
    request: web.Request,
    url: str,
    page_url: str | None,
    canonical: str,
    video_id: str | None,
    *,
    full: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Open the URL, sniff its first bytes, store the check and start the job."""
    app = request.app
    sessions = app[sessions_key]
    card = app[runtime_key].detector.card

    # Open the upstream before accepting: a refused or dead URL, or a page without a video, is this
    # request's 4xx/502. Pages are resolved (yt-dlp), HLS/DASH sampled, files streamed (media.ingest).
    ingest = await _open(app, url)
    check_id = new_check_id()
    await repo.create_check(
        sessions,
        id=check_id,
        source="url",
        source_url=canonical,
        page_url=page_url,
        container=ingest.container,
        model_id=card.id,
        model_version=card.version,
        request_id=request.get(request_id_key),
        owner=app[settings_key].instance_id,
    )
    job = _start(app, check_id, ingest, canonical, video_id, request.get(request_id_key), full=full)
    return 202, {"id": check_id, "status": job.status}


async def _open(app: web.Application, url: str) -> Ingest:
    """Open ``url`` through the SSRF-safe fetcher into a new spool (its first bytes sniffed)."""
    settings = app[settings_key]

    def new_spool(size: int | None) -> GrowingFile:
        return GrowingFile(
            dir=settings.data_dir / "uploads", max_bytes=settings.max_upload_bytes, expected_size=size
        )

    budget = StreamBudget(max_duration_s=settings.max_duration_s)
    return await open_url(url, app[fetcher_key], new_spool, budget=budget)


def _start(
    app: web.Application,
    check_id: str,
    ingest: Ingest,
    canonical: str,
    video_id: str | None,
    request_id: str | None,
    *,
    full: bool = False,
) -> Job:
    """Start the job of the stored check ``check_id`` on an opened URL; the download goes on behind it."""
    jobs = app[jobs_key]
    spool = ingest.spool

    def keys() -> list[tuple[str, str]]:
        out = [("url", canonical)]
        if video_id is not None:
            out.append(("video_id", video_id))
        if spool.sha256:
            out.append(("sha256", spool.sha256))
        out.extend(k for k in ingest.cache_keys() if k not in out)  # page URL, media URL, platform id
        return out

    job: Job = jobs.start(
        check_id,
        spool.reader(),
        container=ingest.container,
        cleanup=spool.close,
        keys=keys,
        source_url=canonical,
        request_id=request_id,
        full=full,
    )
    job.media_extra = ingest.media  # bytes fetched, sampling: merged into the verdict's media block
    if not spool.finished:
        job.pump = asyncio.create_task(ingest.pump(stop=job.stop.is_set), name=f"fetch-{check_id}")
    return job


async def resume_url_check(app: web.Application, check: Check) -> None:
    """Fetch an accepted URL check again under its own id (start-up recovery after a crash).

    The stored URL is the canonical one (tracking parameters dropped). When the upstream now
    refuses or fails, the check fails with that reason, as the original request would have.
    """
    assert check.source_url is not None
    sessions = app[sessions_key]
    try:
        ingest = await _open(app, check.source_url)
    except UnmaskError as exc:
        await repo.fail_check(
            sessions,
            check.id,
            exc.code,
            f"fetching the URL again after a server restart failed: {exc.message}",
        )
        return
    if ingest.container != check.container:
        await repo.update_check(sessions, check.id, container=ingest.container)
    _start(app, check.id, ingest, check.source_url, platform_video_id(check.source_url), check.request_id)
    _LOGGER.info("check %s: fetching %s again after a restart", check.id, check.source_url)


async def stop_pumps(jobs: list[Job]) -> None:
    """Cancel the download tasks of running URL checks (shutdown)."""
    for job in jobs:
        if job.pump is not None and not job.pump.done():
            job.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job.pump
