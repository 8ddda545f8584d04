"""Face tracking: windowed search between periodic full scans finds the same faces."""

from __future__ import annotations

from server.vision.faces import FaceBox, create_face_detector
from server.vision.tracking import REDETECT_EVERY, FaceTracker
from tests.helpers.videos import blank_frames, face_frames


def _iou(a: FaceBox, b: FaceBox) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a.w * a.h + b.w * b.h - inter)


def test_tracked_boxes_match_full_detection_with_fewer_full_scans() -> None:
    frames = list(face_frames(seconds=6.0, fps=2, size=(640, 360)))
    detector = create_face_detector("haar")
    tracker = FaceTracker(detector)
    for frame in frames:
        full = detector.detect(frame)
        tracked = tracker.detect(frame)
        assert len(full) == len(tracked) == 1
        assert _iou(full[0], tracked[0]) > 0.6
    assert tracker.full_scans <= len(frames) // REDETECT_EVERY + 1
    assert tracker.window_scans >= len(frames) - tracker.full_scans


def test_no_faces_means_full_scans_every_time() -> None:
    tracker = FaceTracker(create_face_detector("haar"))
    for frame in blank_frames(seconds=1.0, fps=4):
        assert tracker.detect(frame) == []
    assert tracker.window_scans == 0 and tracker.full_scans == 4


def test_a_lost_face_triggers_a_full_scan() -> None:
    detector = create_face_detector("haar")
    tracker = FaceTracker(detector)
    face = next(iter(face_frames(seconds=0.5, fps=2, size=(640, 360))))
    blank = next(iter(blank_frames(seconds=0.5, fps=2, size=(640, 360))))
    assert len(tracker.detect(face)) == 1
    assert tracker.detect(blank) == []
    assert tracker.full_scans == 2


class _PlainHaar:
    """The Haar detector without its sized scan, as any other FaceDetector is followed."""

    def __init__(self) -> None:
        self.haar = create_face_detector("haar")

    def detect(self, image):  # type: ignore[no-untyped-def]
        return self.haar.detect(image)


def test_size_limited_window_scans_follow_the_same_boxes() -> None:
    frames = list(face_frames(seconds=6.0, fps=2, size=(640, 360)))
    sized, plain = FaceTracker(create_face_detector("haar")), FaceTracker(_PlainHaar())
    for frame in frames:
        assert sized.detect(frame) == plain.detect(frame)
    assert sized.full_scans == plain.full_scans
    assert sized.window_scans == plain.window_scans >= len(frames) - sized.full_scans
