"""64-bit perceptual hashes of frames (DCT pHash), robust to re-encoding and rescaling.

A re-encode at another bitrate or size moves a handful of the 64 bits; an unrelated frame
differs in about half. Hashes are stored as signed 64-bit integers (SQL BIGINT) and split into
four 16-bit bands for indexed candidate search (server/db/cache.py).
"""

from __future__ import annotations

import cv2
import numpy as np

BANDS = 4
BAND_BITS = 16

# Hash only the central part of the frame: a re-upload that crops a few percent off the edges
# (or adds a thin border) then still sees the same content.
CENTER_FRACTION = 0.9


def phash64(image: np.ndarray) -> int:
    """The unsigned 64-bit pHash of an HxWx3 RGB (or HxW gray) uint8 image."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    mh, mw = int(h * (1 - CENTER_FRACTION) / 2), int(w * (1 - CENTER_FRACTION) / 2)
    core = gray[mh : h - mh, mw : w - mw]
    small = cv2.resize(core, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    # The DC term carries only brightness; the median of the rest is the bit threshold.
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def to_signed(value: int) -> int:
    """Unsigned 64-bit → signed (for BIGINT columns)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def to_unsigned(value: int) -> int:
    """Signed BIGINT → unsigned 64-bit."""
    return value + (1 << 64) if value < 0 else value


def bands(value: int) -> tuple[int, ...]:
    """The four 16-bit bands of an unsigned hash, most significant first."""
    mask = (1 << BAND_BITS) - 1
    return tuple((value >> (BAND_BITS * (BANDS - 1 - i))) & mask for i in range(BANDS))


def hamming(a: int, b: int) -> int:
    """Bits that differ between two unsigned 64-bit hashes."""
    return (to_unsigned(a) ^ to_unsigned(b)).bit_count()


def to_hex(value: int) -> str:
    """A hash as 16 lowercase hex digits (the API and extension format)."""
    return f"{to_unsigned(value):016x}"


def from_hex(text: str) -> int:
    """Parse 16 hex digits; raises ValueError for anything else."""
    if len(text) != 16:
        raise ValueError(f"a frame hash is 16 hex digits, got {len(text)} characters")
    return int(text, 16)
