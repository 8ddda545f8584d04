"""The loaded models a process checks videos with: one detector, per-thread face detectors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from server.robust.tamper.score import TamperScorer
from server.vision.batcher import InferenceBatcher
from server.vision.detector import Detector
from server.vision.faces import FaceDetector, create_face_detector
from server.vision.threads import set_op_threads


@dataclass
class Runtime:
    """Models shared by all checks of a process.

    The torch detector is safe to call from several threads under inference mode; OpenCV's
    cascade classifier is not, so each thread gets its own face detector.
    """

    detector: Detector
    face_detector_name: str = "haar"
    tamper: TamperScorer | None = None
    pixel_model: torch.nn.Module | None = None
    batcher: InferenceBatcher | None = None
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @classmethod
    def load(
        cls, model_dir: Path, *, device: str = "auto", face_detector: str = "haar", threads: int = 0
    ) -> Runtime:
        """Load the detector checkpoint (hash and card checked) and warm it once.

        ``threads`` caps torch's and OpenCV's threads per call (0: their defaults, all cores).
        """
        set_op_threads(threads)
        detector = Detector.load(model_dir, device=device)
        # The tamper calibration belongs to one detector's weights; without one (or with one fitted
        # on other weights: ignored with a warning), frames get no tamper score (and the verdict
        # says so through tamper.threshold = null).
        tamper = TamperScorer.load_for(model_dir, detector.card.weights_sha256)
        runtime = cls(
            detector=detector,
            face_detector_name=face_detector,
            tamper=tamper,
            pixel_model=detector.pixel_model() if tamper is not None else None,
        )
        runtime.faces()  # fail at start-up, not on the first check, if the face model is missing
        return runtime

    def enable_batching(self) -> None:
        """Route every check's detector calls through one shared batching queue (servers)."""
        if self.batcher is None:
            self.batcher = InferenceBatcher(self.detector)

    def close(self) -> None:
        """Stop the batching thread, if any."""
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None

    def logits_fn(self):  # type: ignore[no-untyped-def]
        """What score_frame calls for logits: the shared batcher, or None (the detector itself)."""
        return None if self.batcher is None else self.batcher.logits

    @contextmanager
    def check(self) -> Iterator[None]:
        """Mark one running check (the batcher then flushes once every running check has a
        request waiting, instead of waiting out its window)."""
        if self.batcher is None:
            yield
            return
        with self.batcher.caller():
            yield

    def pixel_fn(self):  # type: ignore[no-untyped-def]
        """What score_frame calls for [0, 1] pixels (crops with the tamper check's copies): the
        shared batcher, or None (the detector itself)."""
        return None if self.batcher is None else self.batcher.pixel_logits

    @property
    def tamper_threshold(self) -> float | None:
        """The suspicious-frame threshold, or None when no calibration is loaded."""
        return None if self.tamper is None else self.tamper.threshold

    def faces(self) -> FaceDetector:
        """This thread's face detector."""
        det = getattr(self._local, "faces", None)
        if det is None:
            det = create_face_detector(self.face_detector_name)
            self._local.faces = det
        return det
