"""Make report thumbnails from pixels (called on the executor while the job still has the frames)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from server import limits
from server.db.thumbnails import ThumbnailItem, ThumbnailKind

# JPEG quality of thumbnails: faces stay recognisable at ~10 KB for 240 px.
JPEG_QUALITY = 80

# Face frames the job keeps thumbnails of (the first ones with a face); the rest of the
# per-check budget is left for original/purified pairs of tampered frames.
FACE_THUMBNAILS = 6


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def _fit(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, limits.THUMBNAIL_MAX_SIDE / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb), scale


def _check(rgb: np.ndarray) -> None:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise ValueError("a thumbnail source must be an HxWx3 uint8 RGB array")


def face_thumbnail(index: int, t: float, frame: np.ndarray, boxes: Sequence[Sequence[int]]) -> ThumbnailItem:
    """The frame scaled down, with its face boxes ([x, y, w, h] in frame pixels) scaled alike."""
    _check(frame)
    small, scale = _fit(frame)
    scaled = [[round(v * scale) for v in box[:4]] for box in boxes]
    h, w = small.shape[:2]
    return ThumbnailItem(index, t, ThumbnailKind.FACE, _jpeg(small), w, h, scaled)


def crop_thumbnail(index: int, t: float, crop: np.ndarray, *, purified: bool) -> ThumbnailItem:
    """A face crop as the detector saw it (``purified=False``) or after purification."""
    _check(crop)
    small, _ = _fit(crop)
    h, w = small.shape[:2]
    kind = ThumbnailKind.PURIFIED if purified else ThumbnailKind.ORIGINAL
    return ThumbnailItem(index, t, kind, _jpeg(small), w, h)
