"""Benchmark inputs: long 1280x720 H.264 videos with a moving real face, cached in /tmp."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from server.media.encode import write_video

CACHE = Path(os.environ.get("UNMASK_BENCH_CACHE", "/tmp/unmask-bench"))


def _frames(seconds: float, fps: int, size: tuple[int, int], seed: int = 0):
    w, h = size
    rng = np.random.default_rng(seed)
    face = cv2.resize(data.astronaut()[20:300, 120:360], (300, 350))
    # Textured background so the encoder spends real bits (flat synthetic frames decode unrealistically fast).
    base = cv2.GaussianBlur((rng.random((h + 64, w + 64, 3)) * 255).astype(np.uint8), (0, 0), 3)
    n = int(seconds * fps)
    for i in range(n):
        dx, dy = int(32 + 30 * np.sin(i / 50)), int(32 + 30 * np.cos(i / 70))
        frame = base[dy : dy + h, dx : dx + w].copy()
        x = int((w - 300) * (0.5 + 0.45 * np.sin(2 * np.pi * i / (fps * 8))))
        y = int((h - 350) * (0.5 + 0.3 * np.cos(2 * np.pi * i / (fps * 11))))
        frame[y : y + 350, x : x + 300] = face
        noise = rng.integers(-6, 7, size=(h // 4, w // 4, 1), dtype=np.int16)
        frame = np.clip(frame.astype(np.int16) + cv2.resize(noise, (w, h))[..., None], 0, 255).astype(
            np.uint8
        )
        yield frame


def bench_video(seconds: int, *, size: tuple[int, int] = (1280, 720), fps: int = 30) -> Path:
    """A cached H.264 MP4 (faststart, x264 default GOP) of ``seconds`` at ``size``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"face_{seconds}s_{size[0]}x{size[1]}_{fps}fps.mp4"
    if not path.exists():
        tmp = path.with_suffix(".tmp.mp4")
        write_video(_frames(seconds, fps, size), tmp, fps=fps, crf=23, preset="ultrafast")
        tmp.rename(path)
    return path
