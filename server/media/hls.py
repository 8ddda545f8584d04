"""HLS playlists (RFC 8216) parsed by us, so FFmpeg never sees a playlist or follows its URIs.

``parse_playlist`` turns a master or media playlist into plain data with absolute segment URLs;
``server.media.ingest`` fetches each segment through the SSRF-safe ``Fetcher`` (so a URI such as
``file:///etc/passwd`` or a redirect to an internal port is refused there) and hands PyAV only
the concatenated segment bytes, with the demuxer forced to MPEG-TS or MP4.

Supported: master playlists (EXT-X-STREAM-INF with RESOLUTION/BANDWIDTH/CODECS), media playlists
with EXTINF, EXT-X-MEDIA-SEQUENCE, EXT-X-BYTERANGE, EXT-X-MAP (fMP4 init section),
EXT-X-DISCONTINUITY and EXT-X-ENDLIST. Not supported (clear errors): encrypted segments
(EXT-X-KEY other than NONE) and I-frame-only playlists.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import urljoin

from server import limits
from server.errors import UndecodableMedia, UnsupportedMedia

__all__ = [
    "BadPlaylist",
    "MasterPlaylist",
    "MediaPlaylist",
    "Segment",
    "Variant",
    "parse_playlist",
    "pick_variant",
]

# One EXTINF may not claim more than this: a longer "segment" is a whole file or a lie that
# would make sampling windows meaningless.
_MAX_SEGMENT_S = 600.0

# Codec prefixes (RFC 6381) that mean a variant carries video.
_VIDEO_CODECS = ("avc1", "avc3", "hvc1", "hev1", "vp09", "vp8", "vp9", "av01", "mp4v", "dvh1", "dvhe")

# Without RESOLUTION, the highest variant at or under this bit rate (typical 720p) is picked.
_BANDWIDTH_CAP = 3_000_000

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^",]*)')


class BadPlaylist(UndecodableMedia):
    """The HLS or DASH manifest is malformed or breaks a limit."""

    code = "bad_playlist"


@dataclass(frozen=True, slots=True)
class Segment:
    """One media segment: absolute URL, place on the playlist timeline, optional byte range."""

    url: str
    start: float
    duration: float
    sequence: int
    byterange: tuple[int, int] | None = None  # (first, last) byte, inclusive, as for Range
    discontinuity: bool = False


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """A list of segments (HLS media playlist, or one DASH representation)."""

    url: str
    segments: tuple[Segment, ...]
    init: Segment | None = None  # EXT-X-MAP / DASH Initialization (fMP4)
    target_duration: float = 0.0
    ended: bool = True  # VOD (EXT-X-ENDLIST); False for a live window
    width: int | None = None
    height: int | None = None
    bandwidth: int | None = None

    @property
    def duration(self) -> float:
        """Seconds covered by all segments."""
        return sum(s.duration for s in self.segments)


@dataclass(frozen=True, slots=True)
class Variant:
    """One rendition offered by a master playlist."""

    url: str
    bandwidth: int | None = None
    width: int | None = None
    height: int | None = None
    codecs: str | None = None

    @property
    def has_video(self) -> bool:
        """False only when CODECS is given and lists no video codec (audio-only rendition)."""
        if not self.codecs:
            return True
        return any(c.strip().lower().startswith(_VIDEO_CODECS) for c in self.codecs.split(","))


@dataclass(frozen=True, slots=True)
class MasterPlaylist:
    """The renditions of a master playlist."""

    url: str
    variants: tuple[Variant, ...]


def parse_playlist(text: str, url: str) -> MasterPlaylist | MediaPlaylist:
    """Parse an HLS playlist fetched from ``url``; relative URIs are resolved against it."""
    if len(text) > limits.PLAYLIST_MAX_BYTES:
        raise BadPlaylist(f"the playlist is larger than {limits.PLAYLIST_MAX_BYTES} bytes")
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "#EXTM3U":
        raise BadPlaylist("not an HLS playlist: it does not start with #EXTM3U")
    if any(line.startswith("#EXT-X-STREAM-INF") for line in lines):
        return _parse_master(lines, url)
    return _parse_media(lines, url)


def _parse_master(lines: list[str], url: str) -> MasterPlaylist:
    """Variants of a master playlist (EXT-X-STREAM-INF lines each followed by a URI)."""
    variants: list[Variant] = []
    pending: dict[str, str] | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = _attributes(line.split(":", 1)[1])
        elif line.startswith("#EXTINF"):
            raise BadPlaylist("the playlist mixes variants (EXT-X-STREAM-INF) and segments (EXTINF)")
        elif not line.startswith("#") and pending is not None:
            width, height = _resolution(pending.get("RESOLUTION"))
            variants.append(
                Variant(
                    url=_absolute(url, line),
                    bandwidth=_int(pending.get("BANDWIDTH")),
                    width=width,
                    height=height,
                    codecs=pending.get("CODECS"),
                )
            )
            pending = None
            if len(variants) > limits.PLAYLIST_MAX_ENTRIES:
                raise BadPlaylist(f"the playlist has more than {limits.PLAYLIST_MAX_ENTRIES} variants")
    if not variants:
        raise BadPlaylist("the master playlist lists no variant stream")
    return MasterPlaylist(url=url, variants=tuple(variants))


def _parse_media(lines: list[str], url: str) -> MediaPlaylist:
    """Segments of a media playlist, with their positions on the playlist timeline."""
    segments: list[Segment] = []
    init: Segment | None = None
    sequence = 0
    target = 0.0
    ended = False
    duration: float | None = None
    byterange: tuple[int, int | None] | None = None
    discontinuity = False
    last_end: dict[str, int] = {}  # URL -> next byte after the previous sub-range (BYTERANGE without @o)
    position = 0.0
    for line in lines[1:]:
        if not line.startswith("#"):
            if duration is None:
                raise BadPlaylist(f"segment {line[:80]!r} has no #EXTINF duration")
            seg_url = _absolute(url, line)
            span = _span(byterange, last_end, seg_url) if byterange is not None else None
            segments.append(Segment(seg_url, position, duration, sequence, span, discontinuity))
            if len(segments) > limits.PLAYLIST_MAX_ENTRIES:
                raise BadPlaylist(f"the playlist has more than {limits.PLAYLIST_MAX_ENTRIES} segments")
            position += duration
            sequence += 1
            duration, byterange, discontinuity = None, None, False
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXTINF":
            duration = _duration(value.split(",", 1)[0])
        elif tag == "#EXT-X-MEDIA-SEQUENCE" and not segments:
            sequence = _int(value) or 0
        elif tag == "#EXT-X-TARGETDURATION":
            target = float(_int(value) or 0)
        elif tag == "#EXT-X-BYTERANGE":
            byterange = _byterange(value)
        elif tag == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif tag == "#EXT-X-ENDLIST" or (tag == "#EXT-X-PLAYLIST-TYPE" and value.strip() == "VOD"):
            ended = True
        elif tag == "#EXT-X-MAP":
            init = _map(_attributes(value), url, last_end)
        elif tag in ("#EXT-X-KEY", "#EXT-X-SESSION-KEY"):
            method = _attributes(value).get("METHOD", "NONE")
            if method != "NONE":
                raise UnsupportedMedia(
                    f"the HLS stream is encrypted (METHOD={method[:20]}): not supported",
                    looks_like="encrypted HLS",
                )
        elif tag == "#EXT-X-I-FRAMES-ONLY":
            raise BadPlaylist("I-frame-only playlists cannot be checked; send the normal playlist")
    if not segments:
        raise BadPlaylist("the media playlist lists no segment")
    return MediaPlaylist(url=url, segments=tuple(segments), init=init, target_duration=target, ended=ended)


def pick_variant(
    variants: tuple[Variant, ...] | list[Variant], max_height: int = limits.STREAM_MAX_HEIGHT
) -> Variant:
    """The highest video rendition at or under ``max_height`` (else the smallest one)."""
    if not variants:
        raise BadPlaylist("the master playlist lists no variant stream")
    video = [v for v in variants if v.has_video] or list(variants)
    sized = [v for v in video if v.height is not None]
    if sized:
        fits = [v for v in sized if v.height is not None and v.height <= max_height]
        if fits:
            return max(fits, key=lambda v: (v.height or 0, v.bandwidth or 0))
        return min(sized, key=lambda v: (v.height or 0, v.bandwidth or 0))
    rated = [v for v in video if v.bandwidth is not None]
    if rated:
        fits = [v for v in rated if (v.bandwidth or 0) <= _BANDWIDTH_CAP]
        if fits:
            return max(fits, key=lambda v: v.bandwidth or 0)
        return min(rated, key=lambda v: v.bandwidth or 0)
    return video[0]


def _attributes(text: str) -> dict[str, str]:
    """An attribute list (KEY=VALUE,KEY="quoted, with commas") as a dict, quotes removed."""
    return {key: value.strip('"') for key, value in _ATTR.findall(text)}


def _absolute(base: str, uri: str) -> str:
    """``uri`` resolved against the playlist URL (any scheme survives: the Fetcher vets it)."""
    if len(uri) > limits.FETCH_MAX_URL_CHARS:
        raise BadPlaylist(f"a URI in the playlist is longer than {limits.FETCH_MAX_URL_CHARS} characters")
    return urljoin(base, uri)


def _int(value: str | None) -> int | None:
    """A non-negative decimal integer, or None when absent or malformed."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _resolution(value: str | None) -> tuple[int | None, int | None]:
    """(width, height) from ``WxH``."""
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", value or "")
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


def _duration(value: str) -> float:
    """An EXTINF duration in seconds, finite and within the per-segment cap."""
    try:
        seconds = float(value)
    except ValueError:
        raise BadPlaylist(f"#EXTINF duration {value[:40]!r} is not a number") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_SEGMENT_S:
        raise BadPlaylist(f"#EXTINF duration {value[:40]!r} is outside 0–{_MAX_SEGMENT_S:g} s")
    return seconds


def _byterange(value: str) -> tuple[int, int | None]:
    """(length, offset or None) from ``n[@o]``."""
    match = re.fullmatch(r"(\d{1,15})(?:@(\d{1,15}))?", value.strip())
    if match is None or int(match.group(1)) == 0:
        raise BadPlaylist(f"byte range {value[:40]!r} is not valid")
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))


def _span(byterange: tuple[int, int | None], last_end: dict[str, int], url: str) -> tuple[int, int]:
    """(first, last) byte of a sub-range; without an offset it follows the previous one of ``url``."""
    length, offset = byterange
    if offset is None:
        if url not in last_end:
            raise BadPlaylist("a BYTERANGE without offset does not follow a range of the same resource")
        offset = last_end[url]
    last_end[url] = offset + length
    return offset, offset + length - 1


def _map(attrs: dict[str, str], base: str, last_end: dict[str, int]) -> Segment:
    """The EXT-X-MAP init section as a zero-length Segment."""
    if "URI" not in attrs:
        raise BadPlaylist("#EXT-X-MAP has no URI")
    url = _absolute(base, attrs["URI"])
    span = None
    if "BYTERANGE" in attrs:
        length, offset = _byterange(attrs["BYTERANGE"])
        span = _span((length, offset if offset is not None else 0), last_end, url)
    return Segment(url=url, start=0.0, duration=0.0, sequence=-1, byterange=span)
