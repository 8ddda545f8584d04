"""A deterministic corpus of hostile media: mutated, truncated and disguised sample videos."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

from server.media.encode import write_video
from tests.helpers.videos import face_frames

# name -> write_video keyword arguments; 1 s of 160x120 at 10 fps keeps each file ~10-30 KB.
BASES: dict[str, dict[str, object]] = {
    "faststart.mp4": {"layout": "faststart"},
    "moov_at_end.mp4": {"layout": "moov_at_end"},
    "fragmented.mp4": {"layout": "fragmented"},
    "h264.mkv": {"container_format": "matroska"},
    "h264.ts": {"container_format": "mpegts"},
}

# MP4 boxes whose fields we corrupt (sizes, dimensions, counts, time scales).
MP4_BOXES = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"avc1", b"avcC", b"tkhd", b"mdhd")
MP4_BOXES += (b"mvhd", b"stsz", b"stco", b"stts", b"stss", b"ctts", b"mdat", b"moof", b"trun", b"tfhd")

# Playlists, concat lists and manifests, bare and behind a video signature.
TRICKS: dict[str, bytes] = {
    "hls.m3u8": b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    "hls_http.m3u8": b"#EXTM3U\n#EXTINF:1,\nhttp://169.254.169.254/latest/meta-data/\n",
    "ffconcat.txt": b"ffconcat version 1.0\nfile '/etc/passwd'\n",
    "concat_url.mp4": b"concat:/etc/passwd|/etc/hostname",
    "subfile.mp4": b"subfile,,start,0,end,0,,:/etc/passwd",
    "dash.mpd": b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><BaseURL>file:///etc/</BaseURL>'
    b"<Period><AdaptationSet><Representation><BaseURL>passwd</BaseURL></Representation></AdaptationSet>"
    b"</Period></MPD>",
    "sdp.mp4": b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nm=video 9 RTP/AVP 96\n",
    "ftyp_m3u8.mp4": b"\0\0\0\x18ftypisom\0\0\0\0isomiso2" + b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n",
    "ebml_m3u8.mkv": b"\x1a\x45\xdf\xa3\x84\x42\x82\x81\x00" + b"#EXTM3U\nfile:///etc/passwd\n",
    "ts_sync_only.ts": b"\x47" + b"\xff" * 187 + (b"\x47" + b"\0" * 187) * 40,
    "png.mp4": b"\x89PNG\r\n\x1a\n" + b"\0" * 200,
    "jpeg.mp4": b"\xff\xd8\xff\xe0" + b"\0" * 200,
    "gzip.mp4": b"\x1f\x8b\x08\x00" + b"\0" * 200,
    "empty.mp4": b"",
    "one_byte.mp4": b"\0",
    "ftyp_only.mp4": b"\0\0\0\x18ftypisom" + b"\0" * 12,
    "huge_box.mp4": b"\0\0\0\x18ftypisom\0\0\0\0isomiso2" + b"\0\0\0\x01moov" + struct.pack(">Q", 2**62),
    "zero_box.mp4": b"\0\0\0\x18ftypisom\0\0\0\0isomiso2" + b"\0\0\0\0moov" * 4,
    "ebml_huge.mkv": b"\x1a\x45\xdf\xa3\x01\xff\xff\xff\xff\xff\xff\xff" + b"\0" * 100,
    "html.mp4": b"<!doctype html><html><video src=/etc/passwd></video></html>",
}


def write_bases(directory: Path) -> dict[str, bytes]:
    """Encode the base videos into ``directory``; their bytes by name."""
    out: dict[str, bytes] = {}
    for name, kwargs in BASES.items():
        frames = face_frames(seconds=1.0, fps=10, size=(160, 120), face=60)
        out[name] = write_video(frames, directory / name, fps=10, gop=5, **kwargs).read_bytes()  # type: ignore[arg-type]
    return out


def mutants(bases: dict[str, bytes], per_base: int = 100) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) for ``per_base`` mutants of every base, then the fixed tricks."""
    for base_name, data in bases.items():
        rng = random.Random(base_name)
        for i in range(per_base):
            kind = ("flip", "flip_head", "truncate", "box", "dims", "splice")[i % 6]
            yield f"{base_name}-{kind}-{i}", _mutate(kind, data, rng)
    yield from TRICKS.items()


def _mutate(kind: str, data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    if kind in ("flip", "flip_head"):
        span = len(buf) if kind == "flip" else min(len(buf), 2048)
        for _ in range(rng.choice((1, 4, 16, 64))):
            buf[rng.randrange(span)] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == "truncate":
        return bytes(buf[: rng.randrange(1, len(buf))])
    if kind == "splice":
        a, b = sorted(rng.randrange(len(buf)) for _ in range(2))
        size = rng.randrange(1, 1024)
        choice = rng.randrange(3)
        if choice == 0:  # duplicate a region
            return bytes(buf[:b] + buf[a : a + size] + buf[b:])
        if choice == 1:  # cut a region out
            return bytes(buf[:a] + buf[a + size :])
        return bytes(buf[:a] + rng.randbytes(size) + buf[a:])  # insert noise
    if kind == "box":
        return _corrupt_box(buf, rng)
    return _absurd_numbers(buf, rng)


def _box_positions(buf: bytearray) -> list[int]:
    """Offsets of the 4CC of every known MP4 box (the size field is the 4 bytes before)."""
    found = []
    for tag in MP4_BOXES:
        start = 0
        while (pos := buf.find(tag, start)) >= 4:
            found.append(pos)
            start = pos + 1
    return found


def _corrupt_box(buf: bytearray, rng: random.Random) -> bytes:
    """Set a box size to an impossible value, or rename the box."""
    positions = _box_positions(buf)
    if not positions:  # MKV / TS: clobber an early length-ish byte run instead
        pos = rng.randrange(min(len(buf), 512))
        buf[pos : pos + 4] = rng.choice((b"\xff\xff\xff\xff", b"\x01\xff\xff\xff", b"\0\0\0\0"))
        return bytes(buf)
    pos = rng.choice(positions)
    if rng.random() < 0.8:
        size = rng.choice((0, 1, 7, 8, 0xFFFFFFFF, 0x7FFFFFFF, len(buf) * 2, rng.randrange(2**32)))
        buf[pos - 4 : pos] = struct.pack(">I", size)
    else:
        buf[pos : pos + 4] = rng.choice((b"free", b"moov", b"mdat", b"skip", b"\0\0\0\0"))
    return bytes(buf)


def _absurd_numbers(buf: bytearray, rng: random.Random) -> bytes:
    """Absurd frame sizes, frame counts, durations and time scales in the MP4 headers."""
    huge16, huge32 = rng.choice((0, 1, 0xFFFF, 0x8000)), rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF))
    patched = False
    for tag, offset, value in (
        (b"avc1", 4 + 24, struct.pack(">HH", huge16, huge16)),  # width, height of the sample entry
        (b"tkhd", 4 + 76, struct.pack(">II", huge32, huge32)),  # 16.16 display width, height
        (b"stsz", 4 + 8, struct.pack(">I", huge32)),  # sample count
        (b"mdhd", 4 + 12, struct.pack(">II", huge32, huge32)),  # time scale, duration
        (b"mvhd", 4 + 12, struct.pack(">II", huge32, huge32)),
        (b"stts", 4 + 8, struct.pack(">II", huge32, huge32)),  # entry: count, delta
    ):
        pos = buf.find(tag)
        if pos >= 0 and rng.random() < 0.5 and pos + offset + len(value) <= len(buf):
            buf[pos + offset : pos + offset + len(value)] = value
            patched = True
    if not patched:  # MKV / TS, or nothing picked: overwrite random 16/32-bit fields
        for _ in range(8):
            pos = rng.randrange(max(1, len(buf) - 4))
            buf[pos : pos + 4] = struct.pack(">I", huge32)
    return bytes(buf)
