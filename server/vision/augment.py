"""Social-media robustness augmentations for face crops: JPEG re-compression, down/up
resizing, Gaussian blur and sensor noise, each applied with its own probability from a
caller-owned RNG so training is reproducible."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; the defaults mimic what uploads go through on social media."""

    p_flip: float = 0.5
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)
    p_resize: float = 0.3
    resize_factor: tuple[float, float] = (0.4, 0.9)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_noise: float = 0.2
    noise_sigma: tuple[float, float] = (1.0, 8.0)
    p_color: float = 0.3
    brightness: float = 0.1  # max |offset| / 255 scale
    contrast: float = 0.15


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode ``image`` (HxWx3 uint8 RGB) as JPEG at ``quality`` and decode it again."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def resize_down_up(image: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` and scale back: the detail loss of a low-resolution re-upload."""
    h, w = image.shape[:2]
    small = cv2.resize(
        image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return cv2.GaussianBlur(image, (0, 0), float(sigma))


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add zero-mean Gaussian noise (``sigma`` in 0–255 units) and clip."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def color_jitter(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """Global brightness offset (fraction of 255) and contrast gain about the mean."""
    img = image.astype(np.float32)
    mean = img.mean()
    return np.clip(np.rint((img - mean) * contrast + mean + 255.0 * brightness), 0, 255).astype(np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """One random augmentation of an RGB uint8 crop; geometric and colour first, codec last."""
    cfg = cfg or AugmentConfig()
    out = image
    if rng.random() < cfg.p_flip:
        out = np.ascontiguousarray(out[:, ::-1])
    if rng.random() < cfg.p_color:
        out = color_jitter(
            out,
            rng.uniform(-cfg.brightness, cfg.brightness),
            1.0 + rng.uniform(-cfg.contrast, cfg.contrast),
        )
    if rng.random() < cfg.p_resize:
        out = resize_down_up(out, rng.uniform(*cfg.resize_factor))
    if rng.random() < cfg.p_blur:
        out = gaussian_blur(out, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.p_noise:
        out = gaussian_noise(out, rng.uniform(*cfg.noise_sigma), rng)
    if rng.random() < cfg.p_jpeg:
        out = jpeg(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out
