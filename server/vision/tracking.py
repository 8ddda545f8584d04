"""Face tracking between sampled frames, so face detection does not re-scan every frame.

A full-frame Haar pass on 720p costs 65–250 ms on one core (more than decode and the detector
together). Faces in a video move little between samples 0.5 s apart, so between periodic
full passes each face is only searched for in a window around its last box, scaled so the
face is ~``TRACK_FACE_PX`` pixels: a few milliseconds instead of a full scan.
"""

from __future__ import annotations

import cv2
import numpy as np

from server.vision.faces import FaceBox, FaceDetector

# Full-frame detection at least this often (in sampled frames), to pick up new faces.
REDETECT_EVERY = 6

# The search window is the predicted box grown by this factor around its centre.
SEARCH_SCALE = 3.0

# Inside the window the face is rescaled to about this size: comfortably above the cascade's
# 24 px window, small enough that the scan is cheap.
TRACK_FACE_PX = 72

# A followed face keeps between these times its previous width; window scans look at sizes
# SIZE_MARGIN beyond them.
MIN_SIZE_RATIO, MAX_SIZE_RATIO = 0.6, 1.6
SIZE_MARGIN = 0.8


class FaceTracker:
    """A stateful ``FaceDetector`` for one video: full detection periodically, windowed in between."""

    def __init__(self, detector: FaceDetector, redetect_every: int = REDETECT_EVERY) -> None:
        self.detector = detector
        self.redetect_every = redetect_every
        self.tracks: list[FaceBox] = []
        # Per track, the centre displacement between the last two samples (constant-velocity guess).
        self.velocity: list[tuple[float, float]] = []
        self.since_full = 0
        self.full_scans = 0
        self.window_scans = 0

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in ``image``, largest first (same contract as ``FaceDetector.detect``)."""
        previous = self.tracks
        if previous and self.since_full < self.redetect_every:
            found = [self._follow(image, box, v) for box, v in zip(previous, self.velocity, strict=True)]
            if all(b is not None for b in found):
                self.since_full += 1
                ordered = sorted(found, key=lambda b: b.w * b.h, reverse=True)  # type: ignore[union-attr]
                self._update(previous, ordered)  # type: ignore[arg-type]
                return list(self.tracks)
        # First frame, time for a full pass, or a face was lost: scan the whole frame.
        self.full_scans += 1
        boxes = self.detector.detect(image)
        self.since_full = 0
        self._update(previous, boxes)
        return list(self.tracks)

    def _update(self, previous: list[FaceBox], boxes: list[FaceBox]) -> None:
        """Keep the boxes as tracks, with each one's velocity from its nearest previous box."""
        velocity = []
        for b in boxes:
            cx, cy = b.x + b.w / 2, b.y + b.h / 2
            near = min(
                previous, key=lambda p: (p.x + p.w / 2 - cx) ** 2 + (p.y + p.h / 2 - cy) ** 2, default=None
            )
            if near is None or abs(near.w - b.w) > 0.5 * b.w:
                velocity.append((0.0, 0.0))
            else:
                velocity.append((cx - near.x - near.w / 2, cy - near.y - near.h / 2))
        self.tracks, self.velocity = boxes, velocity

    def _follow(self, image: np.ndarray, box: FaceBox, velocity: tuple[float, float]) -> FaceBox | None:
        self.window_scans += 1
        h, w = image.shape[:2]
        cx, cy = box.x + box.w / 2 + velocity[0], box.y + box.h / 2 + velocity[1]
        half = max(box.w, box.h) * SEARCH_SCALE / 2
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(w, int(cx + half)), min(h, int(cy + half))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        scale = min(1.0, TRACK_FACE_PX / max(box.w, box.h))
        window = image[y0:y1, x0:x1]
        if scale < 1.0:
            window = cv2.resize(
                window, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))), cv2.INTER_AREA
            )
        window = np.ascontiguousarray(window)
        sized = getattr(self.detector, "detect_sized", None)
        if sized is not None:
            # Only sizes a kept match can have (with a margin: the cascade groups neighbouring
            # sizes), so the small scales that cost most are not scanned.
            face = max(box.w, box.h) * scale
            candidates = sized(
                window, int(face * MIN_SIZE_RATIO * SIZE_MARGIN), round(face * MAX_SIZE_RATIO / SIZE_MARGIN)
            )
        else:
            candidates = self.detector.detect(window)
        best: FaceBox | None = None
        best_dist = float("inf")
        for c in candidates:
            bx, by = x0 + c.x / scale, y0 + c.y / scale
            bw, bh = c.w / scale, c.h / scale
            if not MIN_SIZE_RATIO <= bw / box.w <= MAX_SIZE_RATIO:
                continue
            dist = (bx + bw / 2 - cx) ** 2 + (by + bh / 2 - cy) ** 2
            if dist < best_dist:
                best_dist = dist
                best = FaceBox(round(bx), round(by), round(bw), round(bh), c.score)
        return best
