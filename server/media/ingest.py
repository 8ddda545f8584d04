"""Feed a check's spool from a URL: a progressive file, or sampled HLS/DASH segments.

``open_url`` looks at what a URL is (a known platform page, a video file, an HLS or DASH
manifest, or an HTML page) and returns an ``Ingest`` whose spool already holds the first bytes
and whose container is known; ``Ingest.pump()`` then feeds the rest while the decoder reads.

Streams are read by our own client, segment by segment, through the SSRF-safe Fetcher; PyAV only
ever sees the concatenated segment bytes with the demuxer forced (MPEG-TS or MP4), so a playlist
cannot make FFmpeg open a file or an internal address. A long VOD stream is sampled: a few
windows spread over its whole length instead of every segment (``plan_segments``). TS and fMP4
segments keep their own timestamps, so the times of sampled frames are their true positions.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from server import limits
from server.db.urls import canonical_url, platform_video_id
from server.errors import InvalidField, UndecodableMedia, UnmaskError, UnsupportedMedia
from server.media.dash import parse_mpd
from server.media.fetch import Fetcher, FetchResponse
from server.media.hls import BadPlaylist, MasterPlaylist, MediaPlaylist, Segment, parse_playlist, pick_variant
from server.media.netguard import FetchFailed
from server.media.resolve import ResolvedMedia, resolve_page, safe_headers
from server.media.sniff import sniff_container
from server.media.source import GrowingFile

__all__ = ["Ingest", "IngestStats", "StreamBudget", "open_stream", "open_url", "plan_segments"]

SpoolFactory = Callable[[int | None], GrowingFile]

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<meta", b"<title")


@dataclass(frozen=True)
class StreamBudget:
    """How much of a stream a check reads."""

    max_height: int = limits.STREAM_MAX_HEIGHT
    full_fetch_s: float = limits.STREAM_FULL_FETCH_S
    windows: int = limits.STREAM_SAMPLE_WINDOWS
    window_s: float = limits.STREAM_WINDOW_S
    max_duration_s: float = limits.MAX_DURATION_S


@dataclass
class IngestStats:
    """What was read, and how much a full read would have been."""

    kind: str
    bytes_fetched: int = 0  # every byte read: manifests, init sections, segments, file body
    manifest_bytes: int = 0
    media_bytes: int = 0
    media_seconds: float = 0.0  # playlist seconds of the segments fetched so far
    content_length: int | None = None  # progressive: the announced size
    segments_total: int = 0
    segments_planned: int = 0
    segments_fetched: int = 0
    duration_s: float | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)
    rendition: dict[str, int | None] | None = None
    exact_total: int | None = None  # every segment has a byte range: the total is known
    bandwidth: int | None = None
    finished: bool = False

    @property
    def sampled(self) -> bool:
        """True when only part of the stream's segments are read."""
        return self.segments_planned < self.segments_total

    def total_estimate(self) -> int | None:
        """Bytes a full read would fetch (manifests included), from what was measured so far."""
        if self.kind == "progressive":
            if self.content_length is not None:
                return self.content_length
            return self.bytes_fetched if self.finished else None
        if self.exact_total is not None:
            return self.exact_total + self.manifest_bytes
        if self.media_seconds > 0 and self.duration_s:
            per_second = self.media_bytes / self.media_seconds
            return round(self.bytes_fetched + per_second * max(0.0, self.duration_s - self.media_seconds))
        if self.bandwidth and self.duration_s:
            return round(self.bandwidth / 8 * self.duration_s) + self.manifest_bytes
        return None

    def as_media(self) -> dict[str, Any]:
        """Entries for the verdict's ``media`` block."""
        stream: dict[str, Any] = {"kind": self.kind, "sampled": self.sampled}
        if self.kind != "progressive":
            stream.update(
                segments_fetched=self.segments_fetched,
                segments_total=self.segments_total,
                duration_s=None if self.duration_s is None else round(self.duration_s, 3),
                windows=[[round(a, 3), round(b, 3)] for a, b in self.windows],
                rendition=self.rendition,
            )
        return {
            "bytes_fetched": self.bytes_fetched,
            "bytes_total_estimate": self.total_estimate(),
            "stream": stream,
        }


class Ingest:
    """An opened source: its spool (head already written), container, and the rest to pump."""

    def __init__(
        self,
        spool: GrowingFile,
        container: str,
        stats: IngestStats,
        chunks: AsyncIterator[bytes] | None,
        resolved: ResolvedMedia | None = None,
    ) -> None:
        self.spool = spool
        self.container = container
        self.stats = stats
        self.resolved = resolved
        self._chunks = chunks

    async def pump(self, stop: Callable[[], bool] | None = None) -> None:
        """Write the rest into the spool; a fetch error fails the spool's readers, not the server.

        ``stop`` (the job's stop flag) ends the download early: the spool is finished, so the
        decoder ends cleanly with the bytes it has.
        """
        spool = self.spool
        try:
            if self._chunks is not None:
                async for chunk in self._chunks:
                    if stop is not None and stop():
                        break
                    spool.write(chunk)
            self.stats.finished = True
            spool.finish()
        except UnmaskError as exc:
            spool.fail(exc)
        except Exception as exc:  # the check records it; the server carries on
            spool.fail(exc)
        except BaseException:  # cancelled (shutdown): readers must not wait for a stall timeout
            spool.fail(UndecodableMedia("the download was interrupted"))
            raise
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Drop the upstream connection (the spool is the caller's)."""
        if self._chunks is not None:
            chunks, self._chunks = self._chunks, None
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]

    def cache_keys(self) -> list[tuple[str, str]]:
        """Cache keys this source adds: the page URL, the media URL, the platform's video id."""
        out: list[tuple[str, str]] = []
        r = self.resolved
        if r is None:
            return out
        for url in (r.page_url, r.url):
            if url:
                with contextlib.suppress(InvalidField):
                    out.append(("url", canonical_url(url)))
        if r.video_id:
            out.append(("video_id", r.video_id))
        return list(dict.fromkeys(out))

    def media(self) -> dict[str, Any]:
        """The verdict's ``media`` entries about the download (bytes, sampling, source page)."""
        out = self.stats.as_media()
        r = self.resolved
        if r is not None and r.page_url:
            out["stream"].update(page_url=r.page_url, title=r.title, extractor=r.extractor)
        return out


async def open_url(
    url: str, fetcher: Fetcher, new_spool: SpoolFactory, *, budget: StreamBudget = StreamBudget()
) -> Ingest:
    """Open whatever ``url`` is: a platform page or any HTML page (resolved), a manifest, a file."""
    if platform_video_id(url) is not None:
        resolved = await resolve_page(url, fetcher, max_height=budget.max_height)
        return await open_stream(resolved, fetcher, new_spool, budget=budget)
    return await _open_direct(url, fetcher, new_spool, budget, None)


async def open_stream(
    resolved: ResolvedMedia,
    fetcher: Fetcher,
    new_spool: SpoolFactory,
    *,
    budget: StreamBudget = StreamBudget(),
) -> Ingest:
    """Open resolved media: a progressive file, or a sampled HLS/DASH stream."""
    if resolved.kind == "progressive":
        return await _open_direct(resolved.url, fetcher, new_spool, budget, resolved)
    stats = IngestStats(kind=resolved.kind)
    headers = safe_headers(resolved.headers)
    resp = await fetcher.open(resolved.url, headers=headers)
    text = await _read_manifest(resp, b"", stats)
    return await _open_manifest(resolved, text, fetcher, new_spool, budget, stats)


async def _open_direct(
    url: str, fetcher: Fetcher, new_spool: SpoolFactory, budget: StreamBudget, resolved: ResolvedMedia | None
) -> Ingest:
    """GET ``url`` and decide by its first bytes: video file, manifest, or (unresolved) HTML page."""
    stats = IngestStats(kind="progressive")
    resp = await fetcher.open(url, headers=safe_headers(resolved.headers if resolved else None))
    try:
        head, ended = await _read_head(resp, stats)
        try:
            container = sniff_container(head)
        except UnsupportedMedia:
            kind = _manifest_kind(head, resp.content_type)
            if kind is None:
                raise
        else:
            kind = None
    except BaseException:
        resp.close()
        raise
    if kind in ("hls", "dash"):
        stats.kind = kind
        text = await _read_manifest(resp, head, stats)
        base = resolved or ResolvedMedia(kind=kind, url=resp.url)
        stream = ResolvedMedia(**{**base.__dict__, "kind": kind, "url": resp.url})
        return await _open_manifest(stream, text, fetcher, new_spool, budget, stats)
    if kind == "html":
        resp.close()
        if resolved is not None:  # a resolved "video" that is a page again: no second round
            raise UnsupportedMedia("the resolved video URL returned an HTML page", looks_like="HTML")
        page = await resolve_page(url, fetcher, max_height=budget.max_height)
        return await open_stream(page, fetcher, new_spool, budget=budget)
    stats.content_length = _full_size(resp)
    spool = new_spool(resp.content_length if resp.status == 200 else None)
    try:
        spool.write(head)
        if ended:
            stats.finished = True
            spool.finish()
    except BaseException:
        resp.close()
        spool.close()
        raise
    chunks = None if ended else _body_chunks(resp, stats)
    if ended:
        resp.close()
    return Ingest(spool, container, stats, chunks, resolved)


async def _open_manifest(
    resolved: ResolvedMedia,
    text: str,
    fetcher: Fetcher,
    new_spool: SpoolFactory,
    budget: StreamBudget,
    stats: IngestStats,
) -> Ingest:
    """Pick the rendition, plan the segments, fetch until the container is known."""
    headers = safe_headers(resolved.headers)
    playlist = await _media_playlist(resolved, text, fetcher, headers, budget, stats)
    plan, windows = plan_segments(playlist, budget)
    stats.duration_s = playlist.duration
    stats.segments_total = len(playlist.segments)
    stats.segments_planned = len(plan)
    stats.windows = windows
    stats.bandwidth = playlist.bandwidth
    stats.rendition = {"width": playlist.width, "height": playlist.height, "bandwidth": playlist.bandwidth}
    stats.exact_total = _exact_total(playlist)
    chunks = _segment_chunks(fetcher, playlist, plan, headers, stats)
    spool = new_spool(None)
    try:
        async for chunk in chunks:
            spool.write(chunk)
            if spool.bytes_written >= limits.SNIFF_BYTES:
                break
        else:
            stats.finished = True
            spool.finish()
        container = sniff_container(spool.head)
    except BaseException:
        with contextlib.suppress(Exception):
            await chunks.aclose()
        spool.close()
        raise
    return Ingest(spool, container, stats, None if spool.finished else chunks, resolved)


async def _media_playlist(
    resolved: ResolvedMedia,
    text: str,
    fetcher: Fetcher,
    headers: dict[str, str],
    budget: StreamBudget,
    stats: IngestStats,
) -> MediaPlaylist:
    """The media playlist to read: DASH's chosen representation, or HLS (via its master)."""
    if resolved.kind == "dash":
        return parse_mpd(text, resolved.url, budget.max_height)
    parsed = parse_playlist(text, resolved.url)
    if isinstance(parsed, MediaPlaylist):
        return parsed
    variant = pick_variant(parsed.variants, budget.max_height)
    resp = await fetcher.open(variant.url, headers=headers)
    media = parse_playlist(await _read_manifest(resp, b"", stats), resp.url)
    if isinstance(media, MasterPlaylist):
        raise BadPlaylist("a variant of the master playlist is another master playlist")
    return MediaPlaylist(
        url=media.url,
        segments=media.segments,
        init=media.init,
        target_duration=media.target_duration,
        ended=media.ended,
        width=variant.width,
        height=variant.height,
        bandwidth=variant.bandwidth,
    )


def plan_segments(
    playlist: MediaPlaylist, budget: StreamBudget
) -> tuple[list[Segment], list[tuple[float, float]]]:
    """The segments to fetch and the (start, end) spans they cover on the playlist timeline.

    A VOD stream up to ``full_fetch_s`` long is read whole; a longer one as ``windows`` spans of
    at least ``window_s`` seconds spread evenly from its start to its end. A live playlist is
    read from the newest ``full_fetch_s`` seconds. Nothing past ``max_duration_s`` is read.
    """
    segments = [s for s in playlist.segments if s.start < budget.max_duration_s]
    if not segments:
        return [], []
    if not playlist.ended:
        keep: list[Segment] = []
        for seg in reversed(segments):
            keep.insert(0, seg)
            if sum(s.duration for s in keep) >= budget.full_fetch_s:
                break
        return keep, _spans(keep)
    total = segments[-1].start + segments[-1].duration - segments[0].start
    if total <= budget.full_fetch_s or budget.windows < 1:
        return segments, _spans(segments)
    first = segments[0].start
    span = max(0.0, total - budget.window_s)
    starts = [first + span * i / max(1, budget.windows - 1) for i in range(budget.windows)]
    positions = [s.start for s in segments]
    chosen: dict[int, Segment] = {}
    for w0 in starts:
        i = max(0, bisect.bisect_right(positions, w0) - 1)  # the segment holding w0
        covered = 0.0
        while i < len(segments) and (covered < budget.window_s or covered == 0.0):
            chosen[i] = segments[i]
            covered += segments[i].duration
            i += 1
    plan = [chosen[i] for i in sorted(chosen)]
    return plan, _spans(plan)


def _spans(segments: list[Segment]) -> list[tuple[float, float]]:
    """Merged (start, end) spans of consecutive segments."""
    spans: list[tuple[float, float]] = []
    for seg in segments:
        end = seg.start + seg.duration
        if spans and abs(spans[-1][1] - seg.start) < 1e-6:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((seg.start, end))
    return spans


def _exact_total(playlist: MediaPlaylist) -> int | None:
    """Total media bytes when every segment (and the init section) has a byte range."""
    parts = [*playlist.segments, *([playlist.init] if playlist.init else [])]
    if any(p.byterange is None for p in parts):
        return None
    return sum(p.byterange[1] - p.byterange[0] + 1 for p in parts if p.byterange is not None)


async def _segment_chunks(
    fetcher: Fetcher,
    playlist: MediaPlaylist,
    plan: list[Segment],
    headers: dict[str, str],
    stats: IngestStats,
) -> AsyncIterator[bytes]:
    """The init section (if any), then each planned segment's bytes, fetched one at a time."""
    parts = ([playlist.init] if playlist.init is not None else []) + plan
    for seg in parts:
        async with await fetcher.open(seg.url, headers=headers, range=seg.byterange) as resp:
            if seg.byterange is not None and resp.status != 206:
                raise FetchFailed(f"the server ignored the byte range of a segment ({resp.status})")
            async for chunk in resp.iter_chunks():
                stats.bytes_fetched += len(chunk)
                if seg.sequence >= 0:
                    stats.media_bytes += len(chunk)
                yield chunk
        if seg.sequence >= 0:
            stats.segments_fetched += 1
            stats.media_seconds += seg.duration


async def _body_chunks(resp: FetchResponse, stats: IngestStats) -> AsyncIterator[bytes]:
    """The rest of a progressive body; the response is closed however the iteration ends."""
    try:
        async for chunk in resp.iter_chunks():
            stats.bytes_fetched += len(chunk)
            yield chunk
    finally:
        resp.close()


async def _read_head(resp: FetchResponse, stats: IngestStats) -> tuple[bytes, bool]:
    """The first ``SNIFF_BYTES`` (or more) of the body, and whether the body ended there."""
    head = bytearray()
    async for chunk in resp.iter_chunks():
        head += chunk
        stats.bytes_fetched += len(chunk)
        if len(head) >= limits.SNIFF_BYTES:
            return bytes(head), False
    return bytes(head), True


async def _read_manifest(resp: FetchResponse, head: bytes, stats: IngestStats) -> str:
    """The whole manifest text (``head`` already read), capped at PLAYLIST_MAX_BYTES."""
    body = bytearray(head)
    async with resp:
        async for chunk in resp.iter_chunks():
            body += chunk
            stats.bytes_fetched += len(chunk)
            if len(body) > limits.PLAYLIST_MAX_BYTES:
                raise BadPlaylist(f"the manifest is larger than {limits.PLAYLIST_MAX_BYTES} bytes")
    stats.manifest_bytes += len(body)
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadPlaylist("the manifest is not UTF-8 text") from None


def _manifest_kind(head: bytes, content_type: str | None) -> str | None:
    """ "hls", "dash" or "html" for a body that is not a video, else None."""
    text = head[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    lower = text.lower()
    if text.startswith(b"#EXTM3U"):
        return "hls"
    if b"<mpd" in lower and (lower.startswith(b"<?xml") or lower.startswith(b"<mpd")):
        return "dash"
    if content_type in _HTML_TYPES or lower.startswith(_HTML_STARTS):
        return "html"
    return None


def _full_size(resp: FetchResponse) -> int | None:
    """The whole file's size: Content-Length of a 200, the total of a 206's Content-Range."""
    if resp.status == 206:
        span = resp.content_range
        return None if span is None else span[2]
    return resp.content_length
