"""Face tracking cost: window scans limited to the tracked face's sizes vs unlimited, same frames.

Both arms run the server's FaceTracker over the sampled frames (2/s) of the 60 s 720p bench video
in this process, one OpenCV thread, arms alternating; the unlimited arm hides the Haar detector's
``detect_sized`` so the tracker scans every size in its windows. Prints CPU seconds per arm, the
ratio, and whether both arms returned the same boxes on every frame.

    python bench/tracking.py [--seconds 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.media import bench_video
from server.media.decode import open_video
from server.vision.faces import FaceBox, HaarFaceDetector
from server.vision.tracking import FaceTracker


class _Unlimited:
    """The Haar detector without its sized scan (how any other FaceDetector is followed)."""

    def __init__(self, haar: HaarFaceDetector) -> None:
        self.haar = haar

    def detect(self, image):  # type: ignore[no-untyped-def]
        return self.haar.detect(image)


def _track(detector, frames) -> tuple[float, list[list[FaceBox]], FaceTracker]:  # type: ignore[no-untyped-def]
    tracker = FaceTracker(detector)
    cpu = time.process_time()
    boxes = [tracker.detect(frame) for frame in frames]
    return time.process_time() - cpu, boxes, tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    path = bench_video(args.seconds)
    with open_video(path) as reader:
        frames = [s.image for s in reader.samples(2.0)]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}; {path.name}, {len(frames)} frames"
    )
    haar = HaarFaceDetector()
    times: dict[str, list[float]] = {"limited": [], "unlimited": []}
    same = True
    for _ in range(args.rounds):
        t_lim, b_lim, tr = _track(haar, frames)
        t_all, b_all, _ = _track(_Unlimited(haar), frames)
        times["limited"].append(t_lim)
        times["unlimited"].append(t_all)
        same = same and b_lim == b_all
    lim, full = statistics.median(times["limited"]), statistics.median(times["unlimited"])
    print(
        f"  unlimited window scans {full:.2f} s CPU, limited {lim:.2f} s ({tr.full_scans} full scans, "
        f"{tr.window_scans} window scans); ratio {lim / full:.2f}; same boxes on every frame: {same}"
    )


if __name__ == "__main__":
    main()
