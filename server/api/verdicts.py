"""Cached verdict look-up by URL, bytes or frame hashes, and invalidation."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from server.db import cache
from server.db.urls import canonical_url, platform_video_id
from server.errors import BadRequest, InvalidField, NotFound
from server.keys import jobs_key, sessions_key
from server.vision.phash import from_hex

# Frame hashes accepted per look-up: the cache only compares the first MAX_QUERY_HASHES.
MAX_LOOKUP_HASHES = 256

_SHA256_HEX = frozenset("0123456789abcdef")


def _hit_body(hit: cache.CacheHit) -> dict[str, Any]:
    return {"check_id": hit.check_id, "matched_by": hit.kind, "verdict": hit.as_verdict()}


async def _by_url(request: web.Request, url: str) -> cache.CacheHit | None:
    jobs = request.app[jobs_key]
    hit = await jobs.lookup_key("url", canonical_url(url))
    if hit is None and (video_id := platform_video_id(url)) is not None:
        hit = await jobs.lookup_key("video_id", video_id)
    return hit


def _sha256(value: str) -> str:
    value = value.strip().lower()
    if len(value) != 64 or not set(value) <= _SHA256_HEX:
        raise InvalidField("sha256: expected 64 hex digits", field="sha256")
    return value


async def get_verdict(request: web.Request) -> web.Response:
    """``GET /v1/verdicts?url=…`` or ``?sha256=…``: the cached verdict, or 404."""
    url, sha = request.query.get("url"), request.query.get("sha256")
    if (url is None) == (sha is None):
        raise BadRequest("give exactly one of the query parameters 'url' or 'sha256'")
    if url is not None:
        hit = await _by_url(request, url)
    else:
        hit = await request.app[jobs_key].lookup_key("sha256", _sha256(sha or ""))
    if hit is None:
        raise NotFound("no cached verdict for this video and the active model")
    return web.json_response(_hit_body(hit))


async def lookup(request: web.Request) -> web.Response:
    """``POST /v1/verdicts/lookup`` ``{"frame_hashes": [hex16…], "url"?, "sha256"?}``."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    hit = None
    if isinstance(body.get("url"), str):
        hit = await _by_url(request, body["url"])
    if hit is None and isinstance(body.get("sha256"), str):
        hit = await request.app[jobs_key].lookup_key("sha256", _sha256(body["sha256"]))
    raw = body.get("frame_hashes", [])
    if not isinstance(raw, list) or len(raw) > MAX_LOOKUP_HASHES:
        raise InvalidField(
            f"frame_hashes: a list of at most {MAX_LOOKUP_HASHES} hex strings", field="frame_hashes"
        )
    if hit is None and raw:
        try:
            hashes = [from_hex(h) for h in raw]
        except (TypeError, ValueError) as exc:
            raise InvalidField(f"frame_hashes: {exc}", field="frame_hashes") from exc
        hit = await request.app[jobs_key].lookup_frames(hashes)
    if hit is None:
        raise NotFound("no cached verdict matches")
    return web.json_response(_hit_body(hit))


async def invalidate(request: web.Request) -> web.Response:
    """``DELETE /v1/verdicts/{check_id}``: stop serving this verdict from cache."""
    removed = await cache.invalidate(request.app[sessions_key], check_id=request.match_info["check_id"])
    if removed == 0:
        raise NotFound("no cached keys for this check")
    return web.json_response({"removed": removed})


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_get("/v1/verdicts", get_verdict)
    app.router.add_post("/v1/verdicts/lookup", lookup)
    app.router.add_delete("/v1/verdicts/{check_id}", invalidate)
