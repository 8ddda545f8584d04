"""Run one video through decode → faces → detector, streaming results to callbacks.

Synchronous on purpose: the server calls it on an executor thread, the CLI calls it directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from server.analysis.frames import FrameResult, ThumbnailPicker, score_frame
from server.analysis.runtime import Runtime
from server.analysis.sequential import SequentialTest
from server.media.decode import DecodeLimits, MediaInfo, open_video
from server.media.sandbox import open_sandboxed_video
from server.vision.tracking import FaceTracker


class Cancelled(Exception):
    """The caller asked the analysis to stop (server shutdown, client gone)."""


@dataclass
class Outcome:
    """Everything the verdict is built from."""

    info: MediaInfo
    results: list[FrameResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    decoded_frames: int = 0
    early_stop: dict[str, Any] | None = None


def media_dict(info: MediaInfo) -> dict[str, Any]:
    """MediaInfo as JSON-ready dict."""
    return {
        "container": info.container,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "fps": None if info.fps is None else round(float(info.fps), 3),
        "duration_s": None if info.duration_s is None else round(float(info.duration_s), 3),
    }


def analyze_video(
    source: str | os.PathLike[str] | BinaryIO,
    runtime: Runtime,
    *,
    rate: float,
    limits: DecodeLimits,
    container: str | None = None,
    on_open: Callable[[MediaInfo], None] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    early: SequentialTest | None = None,
    sandbox: bool = True,
) -> Outcome:
    """Decode ``source`` at ``rate`` frames/s and score every sampled frame as it is decoded.

    With ``early``, decoding stops once the sequential test has decided, unless a frame was
    found suspicious of tampering (those videos are read in full: purification decides).
    With ``sandbox`` (the default), libav runs in a resource-limited child process.
    """
    started = time.perf_counter()
    faces = FaceTracker(runtime.faces())
    thumbs = ThumbnailPicker()
    decode_s = detect_s = 0.0
    first_frame_s: float | None = None
    opener = open_sandboxed_video if sandbox else open_video
    with runtime.check(), opener(source, container=container, limits=limits) as reader:
        outcome = Outcome(info=reader.info)
        decode_s += time.perf_counter() - started
        if on_open is not None:
            on_open(reader.info)
        samples = iter(reader.samples(rate))
        while True:
            if cancelled is not None and cancelled():
                raise Cancelled()
            t0 = time.perf_counter()
            frame = next(samples, None)
            t1 = time.perf_counter()
            decode_s += t1 - t0
            if frame is None:
                break
            result = score_frame(
                frame.index,
                frame.t,
                frame.image,
                faces,
                runtime.detector,
                tamper=runtime.tamper,
                pixel_model=runtime.pixel_model,
                logits_fn=runtime.logits_fn(),
                pixel_fn=runtime.pixel_fn(),
            )
            thumbs.take(result, frame.image)
            detect_s += time.perf_counter() - t1
            outcome.results.append(result)
            if first_frame_s is None:
                first_frame_s = time.perf_counter() - started
            if on_frame is not None:
                on_frame(result)
            if result.crops:
                early = None  # a tampered video is not cut short
            if early is not None and early.update(result.score) is not None:
                outcome.early_stop = {**early.summary(), "t": round(result.t, 3)}
                break
        outcome.truncated = reader.truncated
        outcome.decoded_frames = reader.decoded_frames
    outcome.timings = {
        "decode": decode_s,
        "detect": detect_s,
        "first_frame": first_frame_s or 0.0,
        "total": time.perf_counter() - started,
    }
    return outcome
