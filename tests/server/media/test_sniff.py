"""Container sniffing from magic bytes."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from server.errors import UnsupportedMedia
from server.media.sniff import ALLOWED_VIDEO_CODECS, FFMPEG_FORMAT, sniff_container


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("faststart", "mp4"),
        ("fragmented", "mp4"),
        ("moov_at_end", "mp4"),
        ("mkv", "matroska"),
        ("webm", "matroska"),
        ("mpegts", "mpegts"),
    ],
)
def test_sniffs_real_files(video_files: dict[str, Path], layout: str, expected: str) -> None:
    if layout not in video_files:
        pytest.skip("no VP9 encoder")
    assert sniff_container(video_files[layout].read_bytes()[:65536]) == expected


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"\x00\x00\x00\x08moov" + b"\x00" * 8, id="leading-moov"),
        pytest.param(b"\x00\x00\x00\x08wide\x00\x00\x00\x10mdat", id="leading-wide"),
        pytest.param(b"\x00\x00\x00\x01mdat" + b"\x00" * 8, id="large-mdat"),
    ],
)
def test_old_quicktime_leading_boxes_are_mp4(head: bytes) -> None:
    assert sniff_container(head) == "mp4"


def test_short_ts_head_needs_only_the_packets_it_has() -> None:
    assert sniff_container(b"\x47" + b"\x00" * 187 + b"\x47" + b"\x00" * 50) == "mpegts"


def test_lone_sync_byte_is_not_ts() -> None:
    with pytest.raises(UnsupportedMedia):
        sniff_container(b"\x47" + b"\x00" * 187 + b"\x00" + b"\x00" * 400)


@pytest.mark.parametrize(
    ("head", "says"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image", id="png"),
        pytest.param(b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG image", id="jpeg"),
        pytest.param(b"GIF89a\x01\x00", "GIF image", id="gif"),
        pytest.param(b"\n  <!DOCTYPE html><html><body>nope", "HTML page", id="html"),
        pytest.param(b"#EXTM3U\n#EXT-X-VERSION:3\nseg0.ts\n", "send the playlist URL", id="m3u8"),
        pytest.param(b"RIFF\x00\x00\x00\x00AVI LIST", "AVI", id="avi"),
        pytest.param(b"FLV\x01\x05\x00\x00\x00\x09", "FLV", id="flv"),
        pytest.param(b"OggS\x00\x02", "Ogg", id="ogg"),
        pytest.param(b"\x13\x37random bytes that mean nothing", "not recognised", id="random"),
    ],
)
def test_rejects_with_a_helpful_message(head: bytes, says: str) -> None:
    with pytest.raises(UnsupportedMedia) as info:
        sniff_container(head)
    assert says in info.value.message
    assert "MP4" in info.value.message and "MPEG-TS" in info.value.message
    assert info.value.status == 415


@pytest.mark.parametrize("name", sorted(FFMPEG_FORMAT))
def test_forced_formats_exist_in_pyav(name: str) -> None:
    assert av.format.ContainerFormat(FFMPEG_FORMAT[name], "r").name


def test_allowed_codecs_are_decodable() -> None:
    for codec in ALLOWED_VIDEO_CODECS:
        assert av.codec.Codec(codec, "r").type == "video"
