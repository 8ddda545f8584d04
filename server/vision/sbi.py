"""Self-blended images (Shiohara & Yamasaki, CVPR 2022): a pseudo-fake made by blending a face
with a slightly transformed copy of itself, so a detector learns blending boundaries and
colour/sharpness mismatches instead of one generator's fingerprint.

Everything works on a face box (x, y, w, h); an optional landmark set switches the mask from a
deformed ellipse to a deformed convex hull. Parameters are a plain dataclass so videos can
interpolate them over time (``lerp_params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

Box = tuple[int, int, int, int]

# Work only inside the face box grown by this fraction per side: keeps frame-sized inputs cheap
# while leaving room for the scaled/shifted source copy and the blurred mask edge.
_ROI_GROW = 0.45
# Radial harmonics that deform the mask outline (k = 2..5); higher ones would look like noise.
_HARMONICS = 4
_OUTLINE_POINTS = 72


@dataclass(frozen=True)
class SBIParams:
    """One self-blend: the mask shape, its softness and the source copy's transform."""

    axes: tuple[float, float] = (0.9, 1.0)  # ellipse half-axes / box half-size
    center: tuple[float, float] = (0.0, 0.05)  # ellipse centre offset / box size
    deform: tuple[float, ...] = (0.0,) * _HARMONICS  # radial harmonic amplitudes
    phase: tuple[float, ...] = (0.0,) * _HARMONICS
    feather: float = 0.06  # mask blur sigma / box width
    blend: float = 1.0  # peak alpha of the source copy
    rgb_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per-channel offset / 255
    brightness: float = 0.0
    contrast: float = 1.0
    sharpness: float = 0.0  # < 0 blurs the copy, > 0 sharpens it
    scale: float = 1.0  # source copy zoom about the face centre
    shift: tuple[float, float] = (0.0, 0.0)  # source copy offset / box size


def sample_sbi_params(rng: np.random.Generator, strength: float = 1.0) -> SBIParams:
    """Random SBI parameters in the ranges of the paper's source-target augmentations."""
    s = float(strength)
    sign = rng.choice([-1.0, 1.0])
    return SBIParams(
        axes=(float(rng.uniform(0.72, 1.0)), float(rng.uniform(0.85, 1.15))),
        center=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.02, 0.12))),
        deform=tuple(float(v) for v in rng.uniform(-0.07, 0.07, _HARMONICS)),
        phase=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, _HARMONICS)),
        feather=float(rng.uniform(0.02, 0.12)),
        blend=float(rng.choice([0.5, 0.75, 1.0, 1.0, 1.0])),
        rgb_shift=tuple(float(v) for v in rng.uniform(-0.08, 0.08, 3) * s),
        brightness=float(rng.uniform(-0.08, 0.08) * s),
        contrast=float(1.0 + rng.uniform(-0.12, 0.12) * s),
        sharpness=float(sign * rng.uniform(0.2, 1.0) * s),
        scale=float(1.0 + rng.uniform(-0.06, 0.06) * s),
        shift=(float(rng.uniform(-0.04, 0.04) * s), float(rng.uniform(-0.04, 0.04) * s)),
    )


def lerp_params(a: SBIParams, b: SBIParams, t: float) -> SBIParams:
    """Interpolate every numeric field of two parameter sets (t=0 → a, t=1 → b)."""
    out = {}
    for f in fields(SBIParams):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, tuple):
            out[f.name] = tuple((1 - t) * x + t * y for x, y in zip(va, vb, strict=True))
        else:
            out[f.name] = (1 - t) * va + t * vb
    return SBIParams(**out)


def _roi(shape: tuple[int, ...], box: Box) -> tuple[int, int, int, int]:
    """The face box grown by ``_ROI_GROW`` per side, clipped to the image: (x0, y0, x1, y1)."""
    x, y, w, h = box
    gx, gy = round(w * _ROI_GROW), round(h * _ROI_GROW)
    return max(0, x - gx), max(0, y - gy), min(shape[1], x + w + gx), min(shape[0], y + h + gy)


def _outline(box: Box, p: SBIParams, landmarks: np.ndarray | None) -> np.ndarray:
    """The mask polygon (N x 2 float, image coordinates) before blurring."""
    x, y, w, h = box
    if landmarks is not None and len(landmarks) >= 3:
        hull = cv2.convexHull(np.asarray(landmarks, np.float32)).reshape(-1, 2)
        c = hull.mean(axis=0)
        d = hull - c
        theta = np.arctan2(d[:, 1], d[:, 0])
        base = d
    else:
        c = np.array([x + w / 2 + p.center[0] * w, y + h / 2 + p.center[1] * h], np.float32)
        theta = np.linspace(0, 2 * math.pi, _OUTLINE_POINTS, endpoint=False)
        base = np.stack([np.cos(theta) * w / 2 * p.axes[0], np.sin(theta) * h / 2 * p.axes[1]], axis=1)
    radial = np.ones_like(theta)
    for k, (amp, ph) in enumerate(zip(p.deform, p.phase, strict=True), start=2):
        radial += amp * np.cos(k * theta + ph)
    return c + base * radial[:, None]


def sbi_mask(
    shape: tuple[int, ...], box: Box, p: SBIParams, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """The soft blending mask (HxW float32 in [0, blend]) for ``box`` in an image of ``shape``."""
    h, w = shape[:2]
    mask = np.zeros((h, w), np.float32)
    poly = np.round(_outline(box, p, landmarks)).astype(np.int32)
    cv2.fillPoly(mask, [poly], 1.0)
    sigma = max(0.5, p.feather * box[2])
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return np.clip(mask * p.blend, 0.0, 1.0)


def source_copy(image: np.ndarray, box: Box, p: SBIParams) -> np.ndarray:
    """The transformed copy of ``image`` (float32 RGB 0–255): zoom/shift, colour, sharpness."""
    x, y, w, h = box
    src = image.astype(np.float32)
    if p.scale != 1.0 or p.shift != (0.0, 0.0):
        cx, cy = x + w / 2, y + h / 2
        m = np.array(
            [
                [p.scale, 0, (1 - p.scale) * cx + p.shift[0] * w],
                [0, p.scale, (1 - p.scale) * cy + p.shift[1] * h],
            ],
            np.float32,
        )
        src = cv2.warpAffine(
            src, m, (src.shape[1], src.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
    mean = src.reshape(-1, 3).mean(axis=0)
    src = (src - mean) * p.contrast + mean + 255.0 * (p.brightness + np.asarray(p.rgb_shift, np.float32))
    if p.sharpness < 0:
        src = cv2.GaussianBlur(src, (0, 0), max(0.3, -p.sharpness * w / 48))
    elif p.sharpness > 0:
        blurred = cv2.GaussianBlur(src, (0, 0), 1.0)
        src = src + p.sharpness * (src - blurred)
    return np.clip(src, 0, 255)


def apply_sbi(
    image: np.ndarray, box: Box, params: SBIParams, landmarks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``image`` (HxWx3 uint8 RGB) with its transformed copy inside the face mask.

    Returns the blended image (uint8) and the full-size mask (float32, 0–1).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"apply_sbi needs HxWx3 uint8, got {image.shape} {image.dtype}")
    x0, y0, x1, y1 = _roi(image.shape, box)
    roi = image[y0:y1, x0:x1]
    local_box = (box[0] - x0, box[1] - y0, box[2], box[3])
    local_lm = None if landmarks is None else np.asarray(landmarks, np.float32) - [x0, y0]
    mask = sbi_mask(roi.shape, local_box, params, local_lm)
    src = source_copy(roi, local_box, params)
    blended = mask[:, :, None] * src + (1 - mask[:, :, None]) * roi.astype(np.float32)
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    full = np.zeros(image.shape[:2], np.float32)
    full[y0:y1, x0:x1] = mask
    return out, full


def self_blend(
    image: np.ndarray, box: Box, rng: np.random.Generator, landmarks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One random self-blended pseudo-fake of ``image``: (blended uint8, mask float32)."""
    return apply_sbi(image, box, sample_sbi_params(rng), landmarks)


def crop_face_box(size: tuple[int, int], margin: float = 0.3) -> Box:
    """The face box inside a crop of ``size`` (H, W) made by ``server.vision.faces.crop_face``
    with ``margin`` (the crop side is the face side times 1 + margin, face centred)."""
    h, w = size
    fw, fh = w / (1 + margin), h / (1 + margin)
    return round((w - fw) / 2), round((h - fh) / 2), round(fw), round(fh)
