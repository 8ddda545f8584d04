"""Stream a multipart video upload to disk while the check decodes it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, MultipartReader, web

from server import limits
from server.errors import BadRequest, MissingVideo, UnmaskError
from server.media.sniff import sniff_container
from server.media.source import GrowingFile

UPLOAD_CHUNK_BYTES = 256 * 1024

# Form fields other than the video are short strings (page_url, filename hints).
MAX_FORM_FIELD_BYTES = 8 * 1024


@dataclass
class Upload:
    """The upload as far as it has arrived."""

    spool: GrowingFile
    container: str
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


async def _read_field(part: BodyPartReader) -> str:
    data = await part.read_chunk(MAX_FORM_FIELD_BYTES + 1)
    if len(data) > MAX_FORM_FIELD_BYTES:
        raise BadRequest(f"form field {part.name!r} is longer than {MAX_FORM_FIELD_BYTES} bytes")
    return data.decode("utf-8", "replace")


async def next_part(reader: MultipartReader) -> BodyPartReader | MultipartReader | None:
    """The next part of a multipart body; a body aiohttp cannot split is the client's error."""
    try:
        return await reader.next()
    except (ValueError, AssertionError, KeyError) as exc:  # e.g. no starting boundary
        raise BadRequest(f"malformed multipart body: {exc}") from exc


async def open_upload(
    request: web.Request, spool: GrowingFile
) -> tuple[Upload, BodyPartReader, MultipartReader]:
    """Read the form up to the first bytes of the ``video`` part and sniff its container."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    fields: dict[str, str] = {}
    while True:
        part = await next_part(reader)
        if part is None:
            raise MissingVideo("the form has no 'video' file field; send the video as -F video=@file.mp4")
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not accepted")
        if part.name == "video":
            break
        if len(fields) >= 16:
            raise BadRequest("too many form fields")
        fields[part.name or ""] = await _read_field(part)
    # Fill the sniffing window first: the container must be known before the decoder starts.
    while spool.bytes_written < limits.SNIFF_BYTES:
        chunk = await part.read_chunk(UPLOAD_CHUNK_BYTES)
        if not chunk:
            break
        spool.write(chunk)
    if spool.bytes_written == 0:
        raise MissingVideo("the 'video' field is empty")
    container = sniff_container(spool.head)
    return Upload(spool=spool, container=container, filename=part.filename, fields=fields), part, reader


async def pump_rest(part: BodyPartReader, reader: MultipartReader, spool: GrowingFile) -> None:
    """Copy the rest of the video part into the spool, then finish it (or fail it)."""
    try:
        while True:
            chunk = await part.read_chunk(UPLOAD_CHUNK_BYTES)
            if not chunk:
                break
            spool.write(chunk)
            # Give the event loop (and SSE writers) a turn on fast local uploads.
            await asyncio.sleep(0)
        # Drain anything after the video part so the connection stays usable.
        with contextlib.suppress(Exception):
            while (extra := await reader.next()) is not None:
                if isinstance(extra, BodyPartReader):
                    await extra.release()
        spool.finish()
    except UnmaskError as exc:
        spool.fail(exc)
        raise
    except (ConnectionError, asyncio.CancelledError, Exception) as exc:
        spool.fail(BadRequest(f"the upload was cut off after {spool.bytes_written} bytes"))
        raise exc
