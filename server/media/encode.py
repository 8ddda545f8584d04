"""Write RGB frames to a real encoded video file (samples, tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# Muxer options per layout: how the index is placed decides whether a file can be decoded
# while it is still arriving (faststart / fragmented / TS) or only once complete (moov at end).
LAYOUT_OPTIONS: dict[str, dict[str, str]] = {
    "faststart": {"movflags": "+faststart"},
    "fragmented": {"movflags": "frag_keyframe+empty_moov+default_base_moof"},
    "moov_at_end": {},
}


def write_video(
    frames: Iterable[np.ndarray],
    path: str | Path,
    *,
    fps: int = 25,
    codec: str = "libx264",
    crf: int = 23,
    gop: int | None = None,
    layout: str = "faststart",
    container_format: str | None = None,
    preset: str = "veryfast",
) -> Path:
    """Encode ``frames`` (HxWx3 uint8 RGB, all the same even size) into ``path``.

    ``layout`` applies to MP4/MOV outputs; ``container_format`` forces the muxer
    (``mp4``, ``matroska``, ``webm``, ``mpegts``), otherwise the suffix decides.
    """
    path = Path(path)
    options = dict(LAYOUT_OPTIONS[layout]) if path.suffix in {".mp4", ".mov", ".m4v"} else {}
    with av.open(str(path), mode="w", format=container_format, options=options) as out:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = out.add_stream(codec, rate=Fraction(fps))
                stream.width, stream.height = w, h
                stream.pix_fmt = "yuv420p"
                opts: dict[str, str] = {}
                if codec in {"libx264", "libx265"}:
                    opts = {"crf": str(crf), "preset": preset}
                elif codec in {"libvpx", "libvpx-vp9"}:
                    opts = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
                stream.options = opts
                if gop is not None:
                    stream.codec_context.gop_size = gop
            frame = np.ascontiguousarray(frame)
            if stream.pix_fmt == "yuv420p":
                # Convert RGB→YUV (BT.601, limited range, as swscale does) before the encoder:
                # with PyAV's own conversion the encoded bytes varied between runs (measured:
                # the first encode in a process differed); this way every encode is identical.
                vf = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            else:
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
        if stream is None:
            raise ValueError("write_video needs at least one frame")
        for packet in stream.encode(None):
            out.mux(packet)
    return path
