"""Score one sampled frame: find faces, crop them, ask the detector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from server import limits
from server.db.thumbnails import ThumbnailItem
from server.report.thumbs import FACE_THUMBNAILS, crop_thumbnail, face_thumbnail
from server.robust.tamper.checks import Forward
from server.robust.tamper.score import TamperScorer
from server.vision.calibration import apply_calibration
from server.vision.detector import Detector
from server.vision.faces import FaceBox, FaceDetector, crop_face
from server.vision.phash import phash64, to_signed

# Crops are taken with this much context around the face box: blending seams and colour
# mismatches sit at the face boundary, which a tight box would cut off.
CROP_MARGIN = 0.3


@dataclass(slots=True)
class FrameResult:
    """What one sampled frame told us; ``score`` is None when it had no face."""

    index: int
    t: float
    score: float | None
    boxes: list[list[int]] = field(default_factory=list)
    face_scores: list[float] = field(default_factory=list)
    tamper: float | None = None
    purified_score: float | None = None
    purify_status: str | None = None
    phash: int | None = None
    # Transient: face crops of a frame found suspicious, until they are handed to purification.
    crops: list[np.ndarray] | None = field(default=None, repr=False)
    purify_error: str | None = None
    # Transient: small JPEGs for the report page, handed to the database with the verdict.
    thumbnails: list[ThumbnailItem] = field(default_factory=list, repr=False)
    purified_crop: np.ndarray | None = field(default=None, repr=False)

    def to_row(self) -> dict[str, Any]:
        """Column values for server.db.models.Frame."""
        return {
            "index": self.index,
            "t": self.t,
            "score": self.score,
            "tamper": self.tamper,
            "purified_score": self.purified_score,
            "purify_status": self.purify_status,
            "boxes": self.boxes,
            "face_scores": self.face_scores,
            "phash": None if self.phash is None else to_signed(self.phash),
        }

    def to_event(self) -> dict[str, Any]:
        """The timeline entry / SSE ``frame`` payload."""
        return {
            "index": self.index,
            "t": round(self.t, 3),
            "score": None if self.score is None else round(self.score, 4),
            "tamper": None if self.tamper is None else round(self.tamper, 4),
            "purified_score": None if self.purified_score is None else round(self.purified_score, 4),
            "purify_status": self.purify_status,
            "boxes": self.boxes,
        }


def score_frame(
    index: int,
    t: float,
    image: np.ndarray,
    faces: FaceDetector,
    detector: Detector,
    max_faces: int = limits.MAX_FACES_PER_FRAME,
    tamper: TamperScorer | None = None,
    pixel_model: torch.nn.Module | None = None,
    logits_fn: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    pixel_fn: Forward | None = None,
    tamper_on: Callable[[list[FaceBox]], bool] | None = None,
) -> FrameResult:
    """Detect faces in ``image`` (HxWx3 RGB) and score each; the frame's score is the max.

    With a tamper calibration, each face crop also gets a tamper score: the crops and the
    check's copies of them go through the detector in one forward, whose first rows are the
    detector's scores. ``logits_fn`` (crops) and ``pixel_fn`` ([0, 1] pixels) are the shared
    batcher's when the server runs several checks; the detector's own otherwise.
    ``tamper_on(boxes)`` says whether the check may run on this frame's crops (captured frames:
    only where their pixels are lossless); without it, it always runs.
    """
    fingerprint = phash64(image)
    boxes = faces.detect(image)[:max_faces]
    if not boxes:
        return FrameResult(index=index, t=t, score=None, phash=fingerprint)
    h, w = detector.card.input_size
    crops = [crop_face(image, b, margin=CROP_MARGIN, size=(h, w)) for b in boxes]
    frame_tamper = None
    kept = None
    if tamper is not None and pixel_model is not None and (tamper_on is None or tamper_on(boxes)):
        pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0).to(detector.device)
        tampers, out = tamper.score_and_logits(pixel_model, pixels, forward=pixel_fn or detector.pixel_logits)
        logits = out.float().cpu().numpy()
        frame_tamper = float(np.max(tampers))
        if frame_tamper > tamper.threshold:
            # Suspicious: keep the detector-sized crops for purification (released once stored).
            kept = crops
    else:
        logits = (logits_fn or detector.logits)(crops)
    scores = [float(p) for p in apply_calibration(logits, detector.card.calibration)]
    # One manipulated face makes the frame manipulated, so the frame takes the max.
    return FrameResult(
        index=index,
        t=t,
        score=max(scores),
        boxes=[[b.x, b.y, b.w, b.h] for b in boxes],
        face_scores=[round(s, 4) for s in scores],
        tamper=frame_tamper,
        phash=fingerprint,
        crops=kept,
    )


class ThumbnailPicker:
    """Chooses which frames of one check get report-page thumbnails (the first face frames, and
    the crop of every suspicious frame as the detector saw it)."""

    def __init__(self, faces: int = FACE_THUMBNAILS) -> None:
        self.faces_left = faces

    def take(self, result: FrameResult, image: np.ndarray) -> None:
        """Attach thumbnails to ``result`` while its frame image still exists."""
        if result.score is not None and self.faces_left > 0:
            self.faces_left -= 1
            result.thumbnails.append(face_thumbnail(result.index, result.t, image, result.boxes))
        if result.crops:
            result.thumbnails.append(crop_thumbnail(result.index, result.t, result.crops[0], purified=False))
