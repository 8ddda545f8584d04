"""Recognise the container of an upload from its magic bytes, before any decoder sees it."""

from __future__ import annotations

from server.errors import UnsupportedMedia

# Our container names -> the PyAV demuxer forced for them, so probing can never pick another
# demuxer (HLS, concat, image2 ...) that would follow references to other files or URLs.
FFMPEG_FORMAT: dict[str, str] = {
    "mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska": "matroska,webm",
    "mpegts": "mpegts",
}

# The codecs browsers actually play (H.264, HEVC, VP8/VP9, AV1) plus MPEG-4 Part 2, still common
# in old phone and camera uploads. Every other decoder in libavcodec is attack surface we don't need.
ALLOWED_VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})

ACCEPTED = "accepted containers: MP4/MOV, Matroska/WebM, MPEG-TS"

# Leading ISO-BMFF box types other than ftyp that old QuickTime files start with.
_BMFF_LEADING_BOXES = {b"moov", b"mdat", b"free", b"wide", b"skip"}

_TS_PACKET = 188
_TS_SYNC = 0x47

# Magic bytes of things people send by mistake, checked in order: prefix -> what it is.
_LOOKALIKES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"FLV", "an FLV video (Flash)"),
    (b"OggS", "an Ogg file"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"ID3", "an MP3 audio file"),
    (b"\x00\x00\x01\xba", "an MPEG program stream (VOB)"),
    (b"\x00\x00\x00\x01", "a raw H.264/HEVC elementary stream"),
)

_RIFF_KINDS = {b"AVI ": "an AVI video", b"WAVE": "a WAV audio file", b"WEBP": "a WebP image"}


def sniff_container(head: bytes) -> str:
    """Return "mp4", "matroska" or "mpegts" for ``head``; raise UnsupportedMedia otherwise."""
    if len(head) >= 8 and (head[4:8] == b"ftyp" or head[4:8] in _BMFF_LEADING_BOXES):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if _looks_like_ts(head):
        return "mpegts"
    raise UnsupportedMedia(f"{_describe(head)}; {ACCEPTED}", looks_like=_describe(head))


def _looks_like_ts(head: bytes) -> bool:
    """True when the TS sync byte repeats every 188 bytes (3 packets, or all a short head has)."""
    if len(head) < _TS_PACKET:
        return False
    offsets = range(0, min(len(head), 3 * _TS_PACKET), _TS_PACKET)
    return all(head[i] == _TS_SYNC for i in offsets)


def _describe(head: bytes) -> str:
    """Say in words what unsupported bytes look like, for the error message."""
    if not head:
        return "the body is empty"
    for magic, what in _LOOKALIKES:
        if head.startswith(magic):
            return f"this looks like {what}, not a supported video"
    if head[:4] == b"RIFF" and head[8:12] in _RIFF_KINDS:
        return f"this looks like {_RIFF_KINDS[head[8:12]]}, not a supported video"
    text = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"#extm3u"):
        return "this is an HLS playlist (#EXTM3U): send the playlist URL instead"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "this looks like an HTML page, not a video"
    if text.startswith(b"<?xml") and b"<mpd" in text:
        return "this is a DASH manifest (MPD): send the manifest URL instead"
    if text.startswith((b"{", b"[")):
        return "this looks like JSON, not a video"
    return "the container is not recognised"
