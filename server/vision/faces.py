"""Face detection and face crops: a small registry of detectors, Haar cascades by default."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from server.errors import ConfigError
from server.limits import MAX_FACES_PER_FRAME

# Haar runs on a copy whose longer side is at most this: on one core a full 1280x720 frame took
# ~330 ms, the 480 px copy ~65 ms, and faces under 24 px there (64 px at 720p) are too small for
# the deepfake detectors to judge anyway.
DETECT_MAX_SIDE = 480


@dataclass(frozen=True)
class FaceBox:
    """A face in image pixel coordinates; ``score`` is detector-specific (higher = surer)."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    def as_list(self) -> list[int]:
        """``[x, y, w, h]``, as stored in verdict timelines."""
        return [self.x, self.y, self.w, self.h]


class FaceDetector(Protocol):
    """Anything that finds faces in an RGB uint8 image, largest first."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...


_DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register_face_detector(name: str) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Register a face detector factory (class or function) under ``name``."""

    def decorate(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        if name in _DETECTORS:
            raise ValueError(f"face detector {name!r} is already registered")
        _DETECTORS[name] = factory
        return factory

    return decorate


def list_face_detectors() -> list[str]:
    """Sorted names of the registered face detectors."""
    return sorted(_DETECTORS)


def create_face_detector(name: str, **kwargs: Any) -> FaceDetector:
    """Build the face detector registered as ``name``."""
    if name not in _DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(list_face_detectors())}")
    return _DETECTORS[name](**kwargs)


def _check_image(image: np.ndarray) -> None:
    if not (
        isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    ):
        raise ValueError("image must be an HxWx3 uint8 RGB array")


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk so its longer side is at most ``max_side``, and the factor used."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _finish(boxes: list[FaceBox], max_faces: int) -> list[FaceBox]:
    return sorted(boxes, key=lambda b: (-b.w * b.h, -b.score, b.x, b.y))[:max_faces]


def _to_box(
    x: float, y: float, w: float, h: float, scale: float, shape: tuple[int, ...], score: float
) -> FaceBox:
    """Scale a box back to full-image pixels and clip it to the image."""
    ih, iw = shape[:2]
    x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
    x1, y1 = min(iw, round((x + w) / scale)), min(ih, round((y + h) / scale))
    return FaceBox(x0, y0, max(1, x1 - x0), max(1, y1 - y0), float(score))


@register_face_detector("haar")
class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (alt2: on astronaut() the default cascade adds a false
    positive); no model file to ship, ~65 ms per 720p frame on one core."""

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_alt2.xml",
        max_faces: int = MAX_FACES_PER_FRAME,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face_fraction: float = 0.05,
        max_side: int = DETECT_MAX_SIDE,
    ) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise ConfigError(
                f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 dropped the Haar cascades): "
                "install opencv-python-headless<5"
            )
        path = Path(cascade) if Path(cascade).is_file() else Path(cv2.data.haarcascades) / cascade
        if not path.is_file() or cv2.CascadeClassifier(str(path)).empty():
            raise ConfigError(f"Haar cascade {cascade!r} not found or unreadable (looked at {path})")
        self.path = str(path)
        self.max_faces = max_faces
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        self.max_side = max_side
        # CascadeClassifier is not safe to share between threads; each executor thread gets its own.
        self._local = threading.local()

    def _cascade(self) -> cv2.CascadeClassifier:
        if not hasattr(self._local, "cascade"):
            self._local.cascade = cv2.CascadeClassifier(self.path)
        return self._local.cascade

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in ``image`` (RGB uint8), largest first, at most ``max_faces``."""
        return self.detect_sized(image)

    def detect_sized(self, image: np.ndarray, min_px: int = 0, max_px: int = 0) -> list[FaceBox]:
        """As ``detect``, scanning only face sizes from ``min_px`` to ``max_px`` (0: no bound).

        The tracker knows a face's size from the previous sample; the cascade's cost is mostly
        in the small scales, which a follow-up scan then skips (16.5 instead of 26 ms per window
        scan on the bench video, same faces found).
        """
        _check_image(image)
        small, scale = _downscale(image, self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        # The cascade's window is 24 px; smaller minimum sizes only add false positives.
        min_side = max(24, round(self.min_face_fraction * min(gray.shape)), round(min_px * scale))
        bounds = {"maxSize": (round(max_px * scale),) * 2} if max_px and max_px * scale > min_side else {}
        rects, neighbours = self._cascade().detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            **bounds,
        )
        boxes = [
            _to_box(x, y, w, h, scale, image.shape, float(n))
            for (x, y, w, h), n in zip(rects, np.asarray(neighbours).reshape(-1), strict=True)
        ]
        return _finish(boxes, self.max_faces)


@register_face_detector("yunet")
class YuNetFaceDetector:
    """OpenCV's YuNet CNN detector; more robust than Haar (profiles, occlusion) but needs its .onnx file."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        max_faces: int = MAX_FACES_PER_FRAME,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_side: int = 640,
    ) -> None:
        if model_path is None or not Path(model_path).is_file():
            raise ConfigError(
                f"YuNet needs its ONNX model (face_detection_yunet_2023mar.onnx from opencv_zoo) at "
                f"model_path, got {str(model_path)!r}; no YuNet model ships with Unmask or OpenCV"
            )
        self.detector = cv2.FaceDetectorYN.create(
            str(model_path), "", (320, 320), score_threshold, nms_threshold
        )
        self.max_faces = max_faces
        self.max_side = max_side
        self._lock = threading.Lock()  # one native detector with mutable input size

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in ``image`` (RGB uint8), largest first, at most ``max_faces``."""
        _check_image(image)
        small, scale = _downscale(image, self.max_side)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        with self._lock:
            self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self.detector.detect(bgr)
        rows = [] if faces is None else faces
        boxes = [_to_box(f[0], f[1], f[2], f[3], scale, image.shape, float(f[14])) for f in rows]
        return _finish(boxes, self.max_faces)


def crop_square(box: FaceBox, margin: float = 0.3) -> tuple[int, int, int, int]:
    """The pixels ``crop_face`` reads for ``box`` as (x0, y0, x1, y1), before clipping to the image."""
    side = max(1, round(max(box.w, box.h) * (1.0 + margin)))
    x0 = round(box.x + box.w / 2 - side / 2)
    y0 = round(box.y + box.h / 2 - side / 2)
    return x0, y0, x0 + side, y0 + side


def crop_face(
    image: np.ndarray, box: FaceBox, margin: float = 0.3, size: tuple[int, int] | None = None
) -> np.ndarray:
    """A square crop centred on ``box``, its side ``max(w, h) * (1 + margin)``, edge-replicated
    where it leaves the image, resized to ``size`` (H, W) when given."""
    _check_image(image)
    ih, iw = image.shape[:2]
    x0, y0, x1, y1 = crop_square(box, margin)
    if x1 <= 0 or y1 <= 0 or x0 >= iw or y0 >= ih:
        raise ValueError(f"face box {box.as_list()} lies outside the {iw}x{ih} image")
    crop = image[max(0, y0) : min(ih, y1), max(0, x0) : min(iw, x1)]
    pads = (max(0, -y0), max(0, y1 - ih), max(0, -x0), max(0, x1 - iw))
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, cv2.BORDER_REPLICATE)
    if size is not None and (crop.shape[0], crop.shape[1]) != tuple(size):
        shrink = crop.shape[0] > size[0]
        crop = cv2.resize(
            crop, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    return np.ascontiguousarray(crop)
