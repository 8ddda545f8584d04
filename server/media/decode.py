"""Streaming, sampled video decoding with PyAV: validate first, then decode only what is emitted.

``open_video`` forces the demuxer the sniffer chose, allows no protocol but ``file`` and checks the
stream against ``DecodeLimits`` before any frame is decoded. ``VideoReader.samples(rate)`` yields,
for each target ``k/rate``, the first frame whose time is at or after it (each frame at most once)
and skips all decoder work that cannot change which frames those are (see ``_SkipPlan``):

* a packet that presents after an already decoded frame of the same sample slot is held back;
  if the next keyframe arrives before a frame that needs it, it is dropped undecoded (whole GOPs
  between sparse targets, the tail of each GOP after its last target), otherwise it is decoded
  with ``skip_frame=NONREF`` (as a reference only);
* only emitted frames are converted to RGB.

This needs no seeking, so it works on non-seekable and still-arriving input, and the frames
emitted are exactly those a full decode would pick (tests compare the two).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

import av
import av.logging
import numpy as np

from server import limits as lim
from server.errors import MediaLimitExceeded, UndecodableMedia, UnmaskError, UnsupportedMedia
from server.media.sniff import ALLOWED_VIDEO_CODECS, FFMPEG_FORMAT, sniff_container

# Silence libav* completely (PyAV's C no-op callback). Not set_level(ERROR): that routes logs
# through a Python callback that takes the GIL from decoder threads, and freeing a frame-threaded
# decoder (which joins those threads while holding the GIL) then deadlocks; seen in our tests.
av.logging.set_level(None)

# What libav (through PyAV) raises for bad data; turned into UndecodableMedia at our boundary.
# UnicodeDecodeError (a ValueError) covers undecodable metadata; MemoryError a hostile allocation.
_AV_ERRORS = (av.error.FFmpegError, ValueError, OSError, EOFError, MemoryError, RuntimeError)

# PyAV's demux() raises IndexError when a corrupt MPEG-TS announces a new stream mid-file.
_DEMUX_ERRORS = (*_AV_ERRORS, IndexError)

# Packets demuxed per decoded frame allowed before we call the file hostile (H.264 field pairs
# may use two packets per frame; nothing legitimate needs more).
_PACKETS_PER_FRAME = 2

# A held-back GOP larger than this is decoded anyway, bounding memory when timestamps are absurd
# (a real 10 s 4K GOP is ~60 MB at streaming bitrates, so this rarely triggers for real video).
_MAX_HELD_BYTES = 64 * 1024 * 1024

# Sample slots remembered for the non-reference skip; reordering never reaches this far back.
_SLOTS_KEPT = 256

# Marker in the packet sequence: drain the decoder and reset it (packets were dropped).
_RESET = object()

# Codecs whose keyframes are often open-GOP (HEVC CRA): after dropped packets the decoder is
# reset, so it skips leading pictures whose references were dropped instead of inventing them.
# Resetting drains the frame-thread pipeline, so closed-GOP codecs are spared it.
_OPEN_GOP_CODECS = frozenset({"hevc"})

# Top-level MP4 boxes walked looking for moov before mdat (ftyp, free, wide, uuid... come first).
_MAX_TOP_BOXES = 16

# Float slack when comparing a frame time with a sample time (timestamps are rationals).
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Per-check decode limits; the defaults are the named limits in ``server.limits``."""

    max_duration_s: float = lim.MAX_DURATION_S
    max_frame_pixels: int = lim.MAX_FRAME_PIXELS
    max_fps: float = lim.MAX_FPS
    max_sampled_frames: int = lim.MAX_SAMPLED_FRAMES
    max_decoded_frames: int = lim.MAX_DECODED_FRAMES


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What the container says about the video stream, before decoding."""

    container: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    frame_count: int | None


@dataclass(frozen=True, slots=True)
class SampledFrame:
    """One emitted sample: its sequence number, presentation time and RGB pixels."""

    index: int
    t: float
    image: np.ndarray = field(repr=False)


def open_video(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    container: str | None = None,
    limits: DecodeLimits = DecodeLimits(),  # frozen: a shared default is safe
) -> VideoReader:
    """Open and validate a video from a path or a (blocking) binary file-like."""
    if isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(source))
        if container is None:
            container = sniff_container(_read_head(path))
        # "file:" stops a name like "concat:a|b" or "http:..." from picking another protocol.
        target: str | BinaryIO = "file:" + path
    else:
        if container is None:
            raise ValueError("container= is required for a file-like source (sniff its head first)")
        target = source
        if _is_seekable(source):
            seekable = not (container == "mp4" and _moov_first(source))
            target = _LibavIO(source, seekable=seekable)
    if container not in FFMPEG_FORMAT:
        raise ValueError(f"unknown container {container!r}")
    try:
        handle = av.open(
            target,
            mode="r",
            format=FFMPEG_FORMAT[container],
            options={"protocol_whitelist": "file"},
            metadata_errors="replace",
        )
    except UnmaskError:
        raise
    except _AV_ERRORS as err:
        raise UndecodableMedia(f"could not read the video container: {_why(err)}") from err
    try:
        return VideoReader(handle, container, limits)
    except BaseException:
        handle.close()
        raise


class _LibavIO:
    """What av.open reads a file-like through: tuned for still-growing uploads.

    * libavformat's avio_size() seeks to the end to learn the size (PyAV cannot answer its size
      query); on a growing upload that seek would wait for the whole upload, so a seek to the
      end answers -1 ("unknown") until the final size is known and libav carries on without it.
    * An MP4 whose moov comes before its mdat is offered as non-seekable: given a seekable
      input the mov demuxer scans every top-level box to the end before the first packet.
    """

    def __init__(self, raw: BinaryIO, *, seekable: bool) -> None:
        self._raw = raw
        self._seekable = seekable
        self.read = raw.read
        self.tell = raw.tell
        self._known_size = getattr(raw, "known_size", None)

    def seekable(self) -> bool:
        """Whether libav may seek (moov-at-end MP4 needs it)."""
        return self._seekable

    def readable(self) -> bool:
        """Always True."""
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Seek; SEEK_END answers -1 while the final size is unknown."""
        if whence == io.SEEK_END and self._known_size is not None and self._known_size() is None:
            return -1
        return self._raw.seek(offset, whence)


def _moov_first(f: BinaryIO) -> bool:
    """True if the MP4's moov box comes before its mdat (faststart or fragmented); rewinds ``f``."""
    pos = 0
    try:
        for _ in range(_MAX_TOP_BOXES):
            f.seek(pos)
            header = f.read(16)
            if len(header) < 8:
                return False
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if kind == b"moov":
                return True
            if kind == b"mdat" or size == 0:
                return False
            if size == 1:
                size = int.from_bytes(header[8:16], "big")
            if size < 8:
                return False
            pos += size
        return False
    finally:
        f.seek(0)


def _is_seekable(f: BinaryIO) -> bool:
    """True for a file-like with seek/tell whose seekable() (if any) says yes."""
    seekable = getattr(f, "seekable", None)
    return hasattr(f, "seek") and hasattr(f, "tell") and (seekable is None or bool(seekable()))


def _read_head(path: str) -> bytes:
    """The first SNIFF_BYTES of ``path``."""
    try:
        with open(path, "rb") as f:
            return f.read(lim.SNIFF_BYTES)
    except OSError as err:
        raise UndecodableMedia(f"could not read the video file: {err.strerror}") from err


def _why(err: BaseException) -> str:
    """A short reason for an error from libav, without the file name PyAV appends."""
    if isinstance(err, av.error.FFmpegError) and err.strerror:
        return str(err.strerror)
    return str(err) or type(err).__name__


def _pick_stream(handle: av.container.InputContainer) -> av.VideoStream:
    """The first video stream that is a real video, not an attached cover picture."""
    for stream in handle.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise UndecodableMedia("no video stream in the file")


class VideoReader:
    """An open, validated video; ``samples(rate)`` decodes it once. Close it (or use ``with``)."""

    def __init__(self, handle: av.container.InputContainer, container: str, limits: DecodeLimits):
        self._handle = handle
        self._limits = limits
        self.truncated = False
        self.decoded_frames = 0
        self._started = False
        stream = self._stream = _pick_stream(handle)
        ctx = stream.codec_context
        codec = ctx.codec.canonical_name if ctx is not None else "unknown"
        if ctx is None or codec not in ALLOWED_VIDEO_CODECS:
            raise UnsupportedMedia(
                f"video codec {codec!r} is not supported; allowed: {', '.join(sorted(ALLOWED_VIDEO_CODECS))}",
                codec=codec,
            )
        tb = stream.time_base
        if not tb or tb <= 0:
            raise UndecodableMedia("the video stream has no valid time base")
        self._tb = tb
        self._start = stream.start_time or 0
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate and 0 < rate < 1e6 else None
        duration = float(stream.duration * tb) if stream.duration and stream.duration > 0 else None
        if container == "mp4" and not stream.frames:
            duration = None  # fragmented MP4 read as a stream: only the first fragment is known
        elif duration is None and container == "matroska" and handle.duration and handle.duration > 0:
            duration = handle.duration / av.time_base  # the Segment's declared duration
        self.info = MediaInfo(
            container=container,
            codec=codec,
            width=ctx.width,
            height=ctx.height,
            fps=fps,
            duration_s=duration,
            frame_count=stream.frames or None,
        )
        self._check_info()
        ctx.thread_type = "AUTO"

    def _check_info(self) -> None:
        """Reject by the container's own numbers before decoding anything."""
        info, limits = self.info, self._limits
        if info.width <= 0 or info.height <= 0:
            raise UndecodableMedia("the video stream has no frame size")
        _check_pixels(info.width, info.height, limits)
        if info.fps is not None and info.fps > limits.max_fps:
            raise MediaLimitExceeded(
                f"frame rate {info.fps:.3g} fps is over the limit of {limits.max_fps:g} fps (max_fps)",
                limit="max_fps",
                value=info.fps,
            )
        if info.duration_s is not None and info.duration_s > limits.max_duration_s:
            _raise_duration(info.duration_s, limits.max_duration_s)

    def samples(self, rate: float) -> Iterator[SampledFrame]:
        """Yield one frame per ``1/rate`` s (the first at or after each k/rate); single use.

        Stops quietly after ``max_sampled_frames`` samples (the verdict is made from those);
        raises MediaLimitExceeded when more than ``max_decoded_frames`` frames need decoding.
        """
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"sample rate must be positive, got {rate}")
        if self._started:
            raise RuntimeError("samples() can be iterated only once per VideoReader")
        self._started = True
        return self._samples(rate)

    def _samples(self, rate: float) -> Iterator[SampledFrame]:
        """The generator behind samples(): emit the first decoded frame of each new slot."""
        plan = _SkipPlan(rate, self._tb, self._start, self._limits, reset=self.info.codec in _OPEN_GOP_CODECS)
        next_slot = emitted = 0
        for frame in self._frames(plan):
            t = self._frame_time(frame, plan)
            slot = math.floor(t * rate + _EPS)
            if slot < next_slot:
                continue
            yield SampledFrame(emitted, t, _to_rgb(frame))
            emitted += 1
            next_slot = slot + 1
            if emitted >= self._limits.max_sampled_frames:
                return
        if emitted == 0 and self.truncated:
            raise UndecodableMedia("the video data is corrupt or truncated before the first frame")

    def _frames(self, plan: _SkipPlan) -> Iterator[av.VideoFrame]:
        """Decoded frames, in presentation order, of the packets the plan lets through."""
        ctx = self._stream.codec_context
        skip = "DEFAULT"
        for item in self._packets(plan):
            if item is _RESET:
                # Frames already sent come out first; then the decoder forgets the dropped
                # packets (HEVC then skips an open GOP's leading pictures instead of inventing them).
                yield from self._decode(None)
                ctx.flush_buffers()
                continue
            packet: av.Packet | None = None
            if item is not None:
                packet, skip_nonref = item  # type: ignore[misc]
                want = "NONREF" if skip_nonref else "DEFAULT"
                if want != skip:
                    ctx.skip_frame = skip = want
            frames = self._decode(packet)
            if frames is None:  # bad data: keep what the decoder still holds, then stop
                yield from self._decode(None) or []
                return
            yield from frames

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame] | None:
        """Send one packet (None drains); None on a data error once a frame has come out."""
        try:
            return self._stream.codec_context.decode(packet)
        except UnmaskError:
            raise
        except _AV_ERRORS as err:
            self.truncated = True
            if self.decoded_frames == 0 and packet is not None:
                raise UndecodableMedia(f"the video data is corrupt: {_why(err)}") from err
            return None if packet is not None else []

    def _packets(self, plan: _SkipPlan) -> Iterator[tuple[av.Packet, bool] | object | None]:
        """(packet, skip_nonref) worth decoding, _RESET after a drop, then None (drain)."""
        count = 0
        max_packets = _PACKETS_PER_FRAME * self._limits.max_decoded_frames
        demux = self._handle.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except UnmaskError:
                raise
            except _DEMUX_ERRORS:
                self.truncated = True
                break
            if packet.size == 0:  # PyAV's flush marker; we drain ourselves
                continue
            count += 1
            if count > max_packets:
                _raise_frames(self._limits)
            yield from plan.feed(packet)
        if self.info.frame_count and count < self.info.frame_count:
            self.truncated = True  # the index promised more frames than the file holds
        yield None

    def _frame_time(self, frame: av.VideoFrame, plan: _SkipPlan) -> float:
        """Count the frame against the limits and return its time from stream start."""
        self.decoded_frames += 1
        if self.decoded_frames > self._limits.max_decoded_frames:
            _raise_frames(self._limits)
        _check_pixels(frame.width, frame.height, self._limits)
        if frame.pts is None:
            return plan.last_time
        return float((frame.pts - self._start) * self._tb)

    def close(self) -> None:
        """Close the container (and with it the decoder)."""
        self._handle.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SkipPlan:
    """Decide which packets the decoder needs, so the frames emitted equal a full decode's.

    A packet is a *candidate* unless a frame already sent in full presents earlier in the same
    sample slot (then it can never be the first frame at or after a target). Candidates go to
    the decoder at once, in full. Other packets are held back: when a candidate follows in the
    same GOP they go first, as possible references, with ``skip_frame=NONREF``; when the next
    keyframe comes first they are dropped undecoded (whole GOPs between sparse targets, and the
    tail of every GOP after its last target).
    """

    def __init__(self, rate: float, tb: Fraction, start: int, limits: DecodeLimits, *, reset: bool) -> None:
        self._rate = rate
        self._tb = tb
        self._start = start
        self._max_t = limits.max_duration_s
        self._reset = reset  # drain and reset the decoder after a drop (open-GOP codecs)
        self._held: list[av.Packet] = []
        self._held_bytes = 0
        self._fed = False  # packets went to the decoder since its last reset
        self._first_full: dict[int, float] = {}  # slot -> earliest time sent in full
        self.last_time = 0.0

    def feed(self, packet: av.Packet) -> list[tuple[av.Packet, bool] | object]:
        """Take the next demuxed packet; return (packet, skip_nonref) pairs and _RESET markers."""
        t = None if packet.pts is None else float((packet.pts - self._start) * self._tb)
        if t is not None:
            if t > self._max_t:
                _raise_duration(t, self._max_t)
            self.last_time = max(self.last_time, t)
        out: list[tuple[av.Packet, bool] | object] = []
        if packet.is_keyframe and self._held:
            if self._fed and self._reset:
                out.append(_RESET)
                self._fed = False
            self._held, self._held_bytes = [], 0
        if not self._candidate(t):
            self._held.append(packet)
            self._held_bytes += packet.size
            if self._held_bytes <= _MAX_HELD_BYTES:
                return out
            out += [(p, True) for p in self._held]
        else:
            out += [(p, True) for p in self._held]
            out.append((packet, False))
        self._held, self._held_bytes, self._fed = [], 0, True
        return out

    def _candidate(self, t: float | None) -> bool:
        """True unless a frame sent in full presents earlier in the same slot; records it if so."""
        if t is None:
            return True
        if t < 0:
            return False  # before the stream start: never emitted, maybe a reference
        slot = math.floor(t * self._rate + _EPS)
        first = self._first_full.get(slot)
        if first is not None and first < t:
            return False
        self._first_full[slot] = t
        if first is None and len(self._first_full) > _SLOTS_KEPT:
            del self._first_full[next(iter(self._first_full))]
        return True


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """HxWx3 uint8 RGB, C-contiguous, turned upright by the display matrix (phone videos)."""
    try:
        image = frame.to_ndarray(format="rgb24")
        turns = round(frame.rotation / 90) % 4
    except _AV_ERRORS as err:
        raise UndecodableMedia(f"could not convert a decoded frame to RGB: {_why(err)}") from err
    return np.ascontiguousarray(np.rot90(image, turns) if turns else image)


def _check_pixels(width: int, height: int, limits: DecodeLimits) -> None:
    """MediaLimitExceeded when a frame is larger than max_frame_pixels."""
    if width * height > limits.max_frame_pixels:
        raise MediaLimitExceeded(
            f"frame size {width}x{height} ({width * height} pixels) is over the limit of "
            f"{limits.max_frame_pixels} pixels (max_frame_pixels)",
            limit="max_frame_pixels",
            value=width * height,
        )


def _raise_duration(value: float, limit: float) -> None:
    """MediaLimitExceeded for a video longer than max_duration_s."""
    raise MediaLimitExceeded(
        f"duration {value:.1f} s is over the limit of {limit:g} s (max_duration_s)",
        limit="max_duration_s",
        value=value,
    )


def _raise_frames(limits: DecodeLimits) -> None:
    """MediaLimitExceeded for too many decoded frames (or demuxed packets)."""
    raise MediaLimitExceeded(
        f"more than {limits.max_decoded_frames} frames to decode (max_decoded_frames)",
        limit="max_decoded_frames",
        value=limits.max_decoded_frames + 1,
    )
