"""Real encoded test videos with a real face in them (skimage's astronaut photograph)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from server.media.encode import write_video


def face_frames(seconds: float = 3.0, fps: int = 25, size: tuple[int, int] = (384, 288), face: int = 200):
    """Frames of the astronaut's face drifting over a textured background."""
    w, h = size
    portrait = cv2.resize(data.astronaut()[20:300, 120:360], (face, int(face * 280 / 240)))
    rng = np.random.default_rng(0)
    background = (rng.random((h, w, 3)) * 60 + 90).astype(np.uint8)
    ph, pw = portrait.shape[:2]
    n = int(seconds * fps)
    for i in range(n):
        frame = background.copy()
        x = int((w - pw) * (0.5 + 0.4 * np.sin(2 * np.pi * i / max(n, 1))))
        y = max(0, (h - ph) // 2)
        frame[y : y + min(ph, h), x : x + pw] = portrait[: min(ph, h)]
        yield frame


def blank_frames(seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (320, 240)):
    """Frames with a moving gradient and no face."""
    w, h = size
    xs = np.linspace(0, 255, w, dtype=np.float32)
    n = int(seconds * fps)
    for i in range(n):
        row = ((xs + i * 7) % 256).astype(np.uint8)
        frame = np.repeat(np.repeat(row[None, :, None], h, axis=0), 3, axis=2)
        yield frame


def write_face_video(path: Path, seconds: float = 3.0, **kw) -> Path:
    """A short H.264 MP4 with a face in every frame."""
    return write_video(face_frames(seconds), path, **kw)


def write_blank_video(path: Path, seconds: float = 2.0, **kw) -> Path:
    """A short H.264 MP4 without faces."""
    return write_video(blank_frames(seconds), path, **kw)


SCENES = (
    "astronaut",
    "coffee",
    "chelsea",
    "camera",
    "rocket",
    "cat",
    "coins",
    "moon",
    "page",
    "horse",
    "text",
)


def scene_frames(
    scene: str, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (320, 240), motion: str = "pan"
):
    """A moving view over one of scikit-image's bundled photographs (distinct content per scene)."""
    img = getattr(data, scene)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.uint8)
    w, h = size
    canvas = cv2.resize(img, (int(w * 1.5), int(h * 1.5)), interpolation=cv2.INTER_AREA)
    n = int(seconds * fps)
    for i in range(n):
        a = i / max(n - 1, 1)
        if motion == "pan":
            x, y, scale = int(a * (canvas.shape[1] - w)), int((canvas.shape[0] - h) * 0.5), 1.0
        else:  # zoom
            scale = 1.0 - 0.3 * a
            x, y = int((canvas.shape[1] - w * scale * 1.5) / 2), int((canvas.shape[0] - h * scale * 1.5) / 2)
        if motion == "pan":
            view = canvas[y : y + h, x : x + w]
        else:
            cw, ch = int(w * 1.5 * scale), int(h * 1.5 * scale)
            view = cv2.resize(canvas[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)
        yield np.ascontiguousarray(view)
