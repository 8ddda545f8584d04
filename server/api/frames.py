"""Frames captured by the extension: open a frames check, then post JPEG frames (with lossless
face patches) to it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from server import limits
from server.analysis.lossless import CapturedFrame, Region, paste_patch
from server.api.uploads import next_part
from server.db import repo
from server.errors import BadRequest, Conflict, InvalidField, NotFound, PayloadTooLarge
from server.jobs import Job, new_check_id
from server.keys import executor_key, jobs_key, request_id_key, runtime_key, sessions_key, settings_key
from server.media.images import LOSSLESS_IMAGE_FORMATS, decode_still

# Short text fields of a frames request (timestamps, the final flag).
MAX_FIELD_BYTES = 64

# Parts are read in chunks of this size (aiohttp needs chunks longer than the boundary).
_READ_CHUNK_BYTES = 64 * 1024


async def open_frames_check(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """Create a check that will receive frames; returns the 202 body."""
    page_url = body.get("page_url")
    if page_url is not None and (not isinstance(page_url, str) or len(page_url) > 2048):
        raise InvalidField("page_url: a string of at most 2048 characters", field="page_url")
    app = request.app
    card = app[runtime_key].detector.card
    check_id = new_check_id()
    await repo.create_check(
        app[sessions_key],
        id=check_id,
        source="frames",
        page_url=page_url,
        status="receiving",
        container="frames",
        model_id=card.id,
        model_version=card.version,
        request_id=request.get(request_id_key),
        owner=app[settings_key].instance_id,
    )
    job = app[jobs_key].start_frames(check_id, request_id=request.get(request_id_key))
    return {"id": check_id, "status": job.status}


async def _read_capped(part: BodyPartReader, cap: int) -> bytes | None:
    """The whole part, or None once it passes ``cap`` bytes.

    read_chunk() may return less than asked before the part ends, and asserts on sizes below
    the boundary length, so read fixed-size chunks until the part's end.
    """
    data = bytearray()
    while chunk := await part.read_chunk(_READ_CHUNK_BYTES):
        data += chunk
        if len(data) > cap:
            return None
    return bytes(data)


@dataclass
class _FramePart:
    """One posted frame: its bytes and, optionally, a lossless patch and where it goes."""

    data: bytes
    patch: bytes | None = None
    at: tuple[int, int] | None = None


def _parse_at(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise InvalidField(
            f"patch_at: {text!r} is not 'x,y' (the patch's top-left pixel in its frame)", field="patch_at"
        ) from None
    if x < 0 or y < 0:
        raise InvalidField(f"patch_at: {text!r} has a negative coordinate", field="patch_at")
    return x, y


async def _read_text(part: BodyPartReader) -> str:
    """A short text field's value."""
    raw = await _read_capped(part, MAX_FIELD_BYTES)
    text = "" if raw is None else raw.decode("ascii", "replace").strip()
    if raw is None or len(text) > MAX_FIELD_BYTES:
        raise InvalidField(f"{part.name}: too long", field=part.name)
    return text


def _parse_t(text: str) -> float:
    try:
        t = float(text)
    except ValueError as exc:
        raise InvalidField(f"t: {text!r} is not a number of seconds", field="t") from exc
    if not 0 <= t <= limits.MAX_DURATION_S:
        raise InvalidField(f"t: {t} is outside [0, {limits.MAX_DURATION_S}] seconds", field="t")
    return t


def _owner(frames: list[_FramePart], field: str) -> _FramePart:
    """The frame a patch field belongs to: the one sent just before it, once per frame."""
    if not frames or getattr(frames[-1], "at" if field == "patch_at" else "patch") is not None:
        raise InvalidField(f"{field}: each follows its own frame, at most one per frame", field=field)
    return frames[-1]


async def _read_bytes(part: BodyPartReader, what: str) -> bytes:
    data = await _read_capped(part, limits.MAX_FRAME_JPEG_BYTES)
    if data is None:
        raise PayloadTooLarge(f"{what} is over {limits.MAX_FRAME_JPEG_BYTES} bytes")
    return data


async def _read_parts(request: web.Request) -> tuple[list[_FramePart], list[float], bool]:
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    frames: list[_FramePart] = []
    times: list[float] = []
    final = False
    while (part := await next_part(reader)) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not accepted")
        if part.name == "frame":
            if len(frames) >= limits.MAX_FRAMES_PER_REQUEST:
                raise PayloadTooLarge(f"at most {limits.MAX_FRAMES_PER_REQUEST} frames per request")
            frames.append(_FramePart(await _read_bytes(part, f"frame {len(frames)}")))
        elif part.name == "patch":
            _owner(frames, "patch").patch = await _read_bytes(part, f"patch of frame {len(frames) - 1}")
        elif part.name == "patch_at":
            _owner(frames, "patch_at").at = _parse_at(await _read_text(part))
        elif part.name == "t":
            times.append(_parse_t(await _read_text(part)))
        elif part.name == "final":
            final = (await _read_text(part)) in ("1", "true", "yes")
        else:
            raise InvalidField(
                f"unknown form field {part.name!r}: send 'frame', 't', 'patch', 'patch_at' and 'final'",
                field=part.name,
            )
    if len(times) != len(frames):
        raise InvalidField(f"{len(frames)} frame(s) but {len(times)} timestamp(s) 't'", field="t")
    for i, f in enumerate(frames):
        if (f.patch is None) != (f.at is None):
            missing = "patch_at" if f.at is None else "patch"
            raise InvalidField(f"frame {i}: a patch needs both 'patch' and 'patch_at'", field=missing)
    return frames, times, final


def _decode(part: _FramePart, index: int, max_pixels: int) -> tuple[np.ndarray, Region | None]:
    """The frame's pixels with its lossless patch pasted in, and the patch's region."""
    image = decode_still(part.data, name=f"frame {index}", max_pixels=max_pixels)
    if part.patch is None or part.at is None:
        return image, None
    patch = decode_still(
        part.patch, name=f"patch of frame {index}", max_pixels=max_pixels, formats=LOSSLESS_IMAGE_FORMATS
    )
    if not image.flags.writeable:
        image = image.copy()
    try:
        return image, paste_patch(image, patch, *part.at)
    except ValueError as exc:
        raise InvalidField(f"patch of frame {index}: {exc}", field="patch_at") from None


async def post_frames(request: web.Request) -> web.Response:
    """``POST /v1/checks/{id}/frames``: score captured frames; ``final=1`` ends the check.

    The answer names the faces found in each frame, so the client can send the region around
    them losslessly with its next frames (server/analysis/lossless.py).
    """
    check_id = request.match_info["id"]
    job: Job | None = request.app[jobs_key].get(check_id)
    if job is None or not job.frames_mode:
        check = await repo.get_check(request.app[sessions_key], check_id)
        if check is None:
            raise NotFound(f"no check with id {check_id!r}")
        raise Conflict(
            f"check {check_id} does not accept frames (source {check.source}, status {check.status})"
        )
    frames, times, final = await _read_parts(request)
    settings = request.app[settings_key]
    loop = asyncio.get_running_loop()
    decoded = await loop.run_in_executor(
        request.app[executor_key],
        lambda: [_decode(part, i, settings.max_frame_pixels) for i, part in enumerate(frames)],
    )
    items = [CapturedFrame(t, image, lossless) for t, (image, lossless) in zip(times, decoded, strict=True)]
    results = await request.app[jobs_key].add_frames(job, items, final=final)
    return web.json_response(
        {
            "accepted": len(results),
            "frames": len(job.results),
            "status": job.status,
            # Whether face patches are worth their bytes here: without a tamper calibration
            # nothing reads them.
            "patches": request.app[runtime_key].tamper is not None,
            "faces": [
                {"t": round(r.t, 3), "boxes": r.boxes, "tamper_checked": r.tamper is not None}
                for r in results
            ],
        }
    )


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_post("/v1/checks/{id}/frames", post_frames)
