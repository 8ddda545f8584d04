"""Checks: start one, read its state and verdict, follow its events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from server.api.frames import open_frames_check
from server.api.uploads import open_upload, pump_rest
from server.api.url_checks import parse_body, start_url_check
from server.db import cache, repo
from server.db.models import Check, CheckStatus
from server.errors import BadRequest, NotFound, UnmaskError
from server.jobs import new_check_id
from server.keys import jobs_key, request_id_key, runtime_key, sessions_key, settings_key
from server.media.source import GrowingFile
from server.recovery import spool_path

# After the upload ends, wait this long for the decoder to validate the container so bad
# media gets its 4xx on the same request; a check still queued behind others gets 202.
OPEN_WAIT_S = 20.0

# SSE comment lines keep proxies from closing an idle stream while a frame takes long.
SSE_KEEPALIVE_S = 15.0


def wants_full(request: web.Request, fields: dict[str, Any] | None = None) -> bool:
    """Whether the client asked for the whole video instead of an early verdict."""
    raw = request.query.get("full") or (fields or {}).get("full")
    return str(raw).strip().lower() in {"1", "true", "yes"} if raw is not None else False


def check_links(check_id: str) -> dict[str, str]:
    """Where to find a check's state, events and report."""
    return {
        "self": f"/v1/checks/{check_id}",
        "events": f"/v1/checks/{check_id}/events",
        "report": f"/checks/{check_id}",
    }


def check_body(check: Check) -> dict[str, Any]:
    """The JSON representation of a check."""
    body: dict[str, Any] = {
        "id": check.id,
        "status": check.status,
        "source": check.source,
        "filename": check.filename,
        "sha256": check.sha256,
        "size_bytes": check.size_bytes,
        "frames_analyzed": check.frames_analyzed,
        "media": check.media,
        "model": {"id": check.model_id, "version": check.model_version},
        "created_at": check.created_at.isoformat() if check.created_at else None,
        "finished_at": check.finished_at.isoformat() if check.finished_at else None,
        "links": check_links(check.id),
    }
    if check.status == CheckStatus.FAILED:
        body["error"] = {"code": check.error_code, "message": check.error_message}
    if check.verdict is not None:
        body["verdict"] = check.verdict.payload
    return body


async def create_check(request: web.Request) -> web.Response:
    """``POST /v1/checks``: a multipart upload (``video``) or JSON ``{"url", "page_url"?}``.

    202 with the check id when work starts (or joins a running check of the same video),
    200 with the verdict when the cache already knows the video.
    """
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from exc
        if isinstance(body, dict) and body.get("source") == "frames":
            out = await open_frames_check(request, body)
            out["links"] = {**check_links(out["id"]), "frames": f"/v1/checks/{out['id']}/frames"}
            return web.json_response(out, status=202, headers={"Location": out["links"]["self"]})
        url, page_url = parse_body(body)
        full = wants_full(request) or body.get("full") is True
        status, out = await start_url_check(request, url, page_url, full=full)
        out["links"] = check_links(out["id"])
        headers = {"Location": out["links"]["self"]} if status == 202 else None
        return web.json_response(out, status=status, headers=headers)
    if request.content_type != "multipart/form-data":
        raise BadRequest(
            f"unsupported content type {request.content_type!r}: send multipart/form-data with a "
            "'video' file field, or application/json with {\"url\": …}",
        )
    settings = request.app[settings_key]
    card = request.app[runtime_key].detector.card
    spool = GrowingFile(dir=settings.data_dir / "uploads", max_bytes=settings.max_upload_bytes)
    started = False
    try:
        upload, part, reader = await open_upload(request, spool)
        check_id = new_check_id()
        await repo.create_check(
            request.app[sessions_key],
            id=check_id,
            source="upload",
            filename=(upload.filename or "")[:255] or None,
            page_url=upload.fields.get("page_url"),
            container=upload.container,
            model_id=card.id,
            model_version=card.version,
            request_id=request.get(request_id_key),
            owner=settings.instance_id,
        )
        # Named by check id from now on, so a restarted server can find and re-run it.
        spool.path = spool.path.rename(spool_path(settings.data_dir, check_id))
        jobs = request.app[jobs_key]
        job = jobs.start(
            check_id,
            spool.reader(),
            container=upload.container,
            cleanup=spool.close,
            keys=lambda: [("sha256", spool.sha256)] if spool.sha256 else [],
            request_id=request.get(request_id_key),
            full=wants_full(request, upload.fields),
        )
        started = True
        await pump_rest(part, reader, spool)
        sessions = request.app[sessions_key]
        await repo.update_check(sessions, check_id, sha256=spool.sha256, size_bytes=spool.bytes_written)
        # The same bytes were judged before: answer from cache and stop the fresh analysis.
        hit = await jobs.lookup_key("sha256", spool.sha256 or "")
        if hit is not None:
            job.cache_hit = hit
            job.stop.set()
            await job.done.wait()
            return web.json_response(
                {
                    "id": check_id,
                    "status": job.status,
                    "verdict": job.verdict,
                    "links": check_links(check_id),
                },
                status=200,
            )
        # The same bytes are being checked right now (another request, maybe another server): the
        # oldest such check goes on, the others join it.
        running = await cache.active_check_with(
            sessions, ref_id=card.id, ref_version=card.version, sha256=spool.sha256
        )
        if running is not None and running != check_id:
            job.superseded_by = running
            job.stop.set()
            return web.json_response(
                {"id": running, "status": "running", "joined": True, "links": check_links(running)},
                status=202,
                headers={"Location": f"/v1/checks/{running}"},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.opened.wait(), OPEN_WAIT_S)
        if job.error is not None and job.error.status < 500:
            raise type(job.error)(job.error.message, check_id=check_id, **job.error.details)
        return web.json_response(
            {"id": check_id, "status": job.status, "links": check_links(check_id)},
            status=202,
            headers={"Location": f"/v1/checks/{check_id}"},
        )
    finally:
        if not started:
            spool.close()


async def get_check(request: web.Request) -> web.Response:
    """``GET /v1/checks/{id}``: status and, when done, the verdict."""
    check_id = request.match_info["id"]
    check = await repo.get_check(request.app[sessions_key], check_id)
    if check is None:
        raise NotFound(f"no check with id {check_id!r}")
    return web.json_response(check_body(check))


def _sse(seq: int, name: str, data: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def check_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/checks/{id}/events``: Server-Sent Events until the verdict or an error."""
    check_id = request.match_info["id"]
    jobs = request.app[jobs_key]
    if jobs.get(check_id) is None and await repo.get_check(request.app[sessions_key], check_id) is None:
        raise NotFound(f"no check with id {check_id!r}")
    try:
        after = int(request.headers.get("Last-Event-ID", "0") or 0)
    except ValueError:
        after = 0
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    events = jobs.subscribe(check_id, after=after, keepalive_s=SSE_KEEPALIVE_S)
    try:
        async for event in events:
            if event is None:
                await response.write(b": keep-alive\n\n")
            else:
                await response.write(_sse(*event))
    except UnmaskError as exc:
        await response.write(_sse(0, "error", {"code": exc.code, "message": exc.message}))
    except ConnectionResetError:
        pass
    finally:
        await events.aclose()
    return response


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_post("/v1/checks", create_check)
    app.router.add_get("/v1/checks/{id}", get_check)
    app.router.add_get("/v1/checks/{id}/events", check_events)
