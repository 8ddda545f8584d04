"""Lossless face patches on captured frames: where the tamper check can see the real pixels.

The extension captures frames as JPEG to keep uploads small, and that JPEG erases the traces the
tamper check looks for (ROBUSTNESS.md, "Frames the extension captures"): after it, the check
flags 4 % of attacked crops instead of 99 %. So next to each JPEG frame the extension may send
the region around the faces the server last found as a PNG; pasted over the JPEG, the face crops
are the exact pixels the page showed, and only crops that lie wholly inside such a region get
the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from server.vision.faces import FaceBox, crop_square


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle of image pixels: columns x .. x+w-1, rows y .. y+h-1."""

    x: int
    y: int
    w: int
    h: int

    def of(self, image: np.ndarray) -> np.ndarray:
        """This region's pixels of ``image``."""
        return np.ascontiguousarray(image[self.y : self.y + self.h, self.x : self.x + self.w])

    def contains(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """Whether the half-open rectangle [x0, x1) × [y0, y1) lies inside this region."""
        return self.x <= x0 and self.y <= y0 and x1 <= self.x + self.w and y1 <= self.y + self.h


def grown_region(box: list[int], shape: tuple[int, ...], grow: float) -> Region:
    """The region a client sends for one face box ``[x, y, w, h]``: the box grown ``grow`` times
    around its centre, clipped to an image of ``shape`` (the extension's ``patchRegion``, for the
    benchmarks and tests that play the client)."""
    x, y, w, h = box
    half = max(w, h) * grow / 2
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = max(0, math.floor(cx - half)), max(0, math.floor(cy - half))
    x1, y1 = min(shape[1], math.ceil(cx + half)), min(shape[0], math.ceil(cy + half))
    return Region(x0, y0, x1 - x0, y1 - y0)


def paste_patch(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> Region:
    """Write ``patch`` (h×w×3) into ``image`` at column ``x``, row ``y``; returns the region.

    Raises ValueError when the patch does not lie wholly inside the image.
    """
    ph, pw = patch.shape[:2]
    ih, iw = image.shape[:2]
    if x < 0 or y < 0 or x + pw > iw or y + ph > ih:
        raise ValueError(f"a {pw}x{ph} patch at ({x}, {y}) does not fit in the {iw}x{ih} frame")
    image[y : y + ph, x : x + pw] = patch
    return Region(x, y, pw, ph)


def covers_crops(region: Region | None, boxes: list[FaceBox], shape: tuple[int, ...], margin: float) -> bool:
    """Whether every face crop of ``boxes`` (as ``crop_face`` takes it, clipped to an image of
    ``shape``) reads only pixels inside ``region``."""
    if region is None or not boxes:
        return False
    ih, iw = shape[:2]
    for box in boxes:
        x0, y0, x1, y1 = crop_square(box, margin)
        if not region.contains(max(0, x0), max(0, y0), min(iw, x1), min(ih, y1)):
            return False
    return True


@dataclass(slots=True)
class CapturedFrame:
    """One frame a client sent: its time, its pixels, and the lossless region pasted into it."""

    t: float
    image: np.ndarray
    lossless: Region | None = None
