"""Moving-face video synthesis: a still portrait becomes a short clip by a smooth camera path
(pan, zoom, roll) over a background, with changing lighting and sensor noise.

Each frame comes with the face's pose in frame coordinates, so manipulations can be aligned
without running a detector and tests know where the face is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from server.samples.faces import SourcePhoto, load_backgrounds

# Face width as a fraction of frame width: small enough for "a face in a scene", large enough
# that the Haar detector finds it and a 128-px crop still holds detail (64–134 px in 320-px frames).
FACE_FRAC_RANGE = (0.2, 0.42)
# Roll stays within what a frontal Haar cascade tolerates (about ±12°).
MAX_ROLL_DEG = 9.0


@dataclass(frozen=True)
class FacePose:
    """Where the face is in one frame: axis-aligned box, roll angle (degrees) and zoom."""

    box: tuple[int, int, int, int]
    angle: float
    scale: float
    center: tuple[float, float]


@dataclass(frozen=True)
class SceneParams:
    """Everything random about one clip, drawn once per video from its seed."""

    face_frac: float
    zoom_amp: float
    zoom_freq: float
    start: tuple[float, float]
    end: tuple[float, float]
    wobble: float
    wobble_freq: float
    roll0: float
    roll_amp: float
    roll_freq: float
    mirror: bool
    background: int
    bg_tint: tuple[float, float, float]
    bg_zoom: float
    gain: float
    gain_amp: float
    gain_freq: float
    cast: tuple[float, float, float]
    gamma: float
    light_strength: float
    light_angle: float
    light_spin: float
    noise: float
    phase: float


def sample_scene(rng: np.random.Generator) -> SceneParams:
    """Draw one clip's camera path, lighting and background."""
    frac = float(rng.uniform(*FACE_FRAC_RANGE))
    # Keep the whole face (plus a margin) inside the frame along the path.
    lo, hi = 0.12 + frac * 0.6, 0.88 - frac * 0.6
    pt = lambda: (float(rng.uniform(lo, hi)), float(rng.uniform(0.3, 0.62)))  # noqa: E731
    return SceneParams(
        face_frac=frac,
        zoom_amp=float(rng.uniform(0.0, 0.15)),
        zoom_freq=float(rng.uniform(0.1, 0.4)),
        start=pt(),
        end=pt(),
        wobble=float(rng.uniform(0.0, 0.03)),
        wobble_freq=float(rng.uniform(0.2, 0.8)),
        roll0=float(rng.uniform(-MAX_ROLL_DEG / 2, MAX_ROLL_DEG / 2)),
        roll_amp=float(rng.uniform(0.0, MAX_ROLL_DEG / 2)),
        roll_freq=float(rng.uniform(0.1, 0.5)),
        mirror=bool(rng.random() < 0.5),
        background=int(rng.integers(len(load_backgrounds()))),
        bg_tint=tuple(float(v) for v in rng.uniform(0.7, 1.2, 3)),
        bg_zoom=float(rng.uniform(1.0, 2.0)),
        gain=float(rng.uniform(0.75, 1.2)),
        gain_amp=float(rng.uniform(0.0, 0.15)),
        gain_freq=float(rng.uniform(0.1, 0.5)),
        cast=tuple(float(v) for v in rng.uniform(0.88, 1.12, 3)),
        gamma=float(rng.uniform(0.8, 1.25)),
        light_strength=float(rng.uniform(0.0, 0.35)),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        light_spin=float(rng.uniform(-0.5, 0.5)),
        noise=float(rng.uniform(0.5, 4.0)),
        phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _background(p: SceneParams, size: tuple[int, int]) -> np.ndarray:
    """A zoomed, tinted, softened background image of ``size`` (w, h)."""
    w, h = size
    bg = load_backgrounds()[p.background]
    bh, bw = bg.shape[:2]
    cw, ch = bw / p.bg_zoom, bh / p.bg_zoom
    cw, ch = min(cw, ch * w / h), min(ch, cw * h / w)
    x0, y0 = (bw - cw) / 2, (bh - ch) / 2
    crop = bg[int(y0) : int(y0 + ch), int(x0) : int(x0 + cw)]
    out = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    out = cv2.GaussianBlur(out, (0, 0), 1.5) * np.asarray(p.bg_tint, np.float32)
    return np.clip(out, 0, 255)


def _affine(
    photo: SourcePhoto, p: SceneParams, t: float, duration: float, size: tuple[int, int]
) -> tuple[np.ndarray, FacePose]:
    """Photo → frame affine at time ``t`` (seconds) of a ``duration``-long path, and the face pose."""
    w, h = size
    fx, fy, fw, fh = photo.face_box
    pw = photo.image.shape[1]
    cx = (pw - 1 - (fx + fw / 2)) if p.mirror else fx + fw / 2
    cy = fy + fh / 2
    u = 0.5 - 0.5 * math.cos(math.pi * min(1.0, t / max(duration, 1e-6)))  # ease in and out
    px = (
        p.start[0]
        + (p.end[0] - p.start[0]) * u
        + p.wobble * math.sin(2 * math.pi * p.wobble_freq * t + p.phase)
    ) * w
    py = (p.start[1] + (p.end[1] - p.start[1]) * u + p.wobble * math.cos(2 * math.pi * p.wobble_freq * t)) * h
    zoom = p.face_frac * w / fw * (1 + p.zoom_amp * math.sin(2 * math.pi * p.zoom_freq * t + p.phase))
    angle = p.roll0 + p.roll_amp * math.sin(2 * math.pi * p.roll_freq * t + 2 * p.phase)
    m = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    m[:, 2] += (px - cx, py - cy)
    # The face box of a rolled face is the zoomed box about the centre, as a detector reports it.
    side_w, side_h = fw * zoom, fh * zoom
    box = (round(px - side_w / 2), round(py - side_h / 2), round(side_w), round(side_h))
    return m, FacePose(box=box, angle=angle, scale=zoom, center=(px, py))


def _lighting(frame: np.ndarray, p: SceneParams, t: float) -> np.ndarray:
    """Global gain, colour cast, gamma and a slowly turning directional light."""
    h, w = frame.shape[:2]
    gain = p.gain * (1 + p.gain_amp * math.sin(2 * math.pi * p.gain_freq * t + p.phase))
    ang = p.light_angle + p.light_spin * t
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx / w - 0.5) * math.cos(ang) + (yy / h - 0.5) * math.sin(ang)) * 2 * p.light_strength
    lit = frame * (gain * (1 + ramp))[:, :, None] * np.asarray(p.cast, np.float32)
    lit = 255.0 * np.power(np.clip(lit / 255.0, 0, 1), p.gamma)
    return lit


def render_scene(
    photo: SourcePhoto,
    p: SceneParams,
    *,
    n_frames: int,
    size: tuple[int, int],
    fps: int,
    rng: np.random.Generator,
) -> Iterator[tuple[np.ndarray, FacePose]]:
    """Yield ``n_frames`` (RGB uint8 frame of ``size`` (w, h), face pose) of one real clip."""
    w, h = size
    img = photo.image[:, ::-1] if p.mirror else photo.image
    img = np.ascontiguousarray(img).astype(np.float32)
    alpha = np.ones(img.shape[:2], np.float32)
    bg = _background(p, size)
    for i in range(n_frames):
        t = i / fps
        m, pose = _affine(photo, p, t, n_frames / fps, size)
        warped = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[:, :, None]
        frame = _lighting(a * warped + (1 - a) * bg, p, t)
        frame = frame + rng.normal(0.0, p.noise, frame.shape).astype(np.float32)
        yield np.clip(np.rint(frame), 0, 255).astype(np.uint8), pose
