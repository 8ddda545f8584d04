"""Decode frames a client captured (JPEG/PNG/WebP stills) with the same limits as video frames."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from server import limits
from server.errors import MediaLimitExceeded, UndecodableMedia, UnsupportedMedia

# Stills a browser canvas can produce (toDataURL / toBlob); anything else is not a captured frame.
ALLOWED_IMAGE_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
# A face patch must hold the exact pixels (server/analysis/lossless.py); WebP may be lossy.
LOSSLESS_IMAGE_FORMATS = frozenset({"PNG"})


def decode_still(
    data: bytes,
    *,
    name: str = "frame",
    max_pixels: int = limits.MAX_FRAME_PIXELS,
    formats: frozenset[str] = ALLOWED_IMAGE_FORMATS,
) -> np.ndarray:
    """One captured frame as an HxWx3 uint8 RGB array; sizes are checked before pixels are decoded."""
    if len(data) > limits.MAX_FRAME_JPEG_BYTES:
        raise MediaLimitExceeded(
            f"{name}: {len(data)} bytes is over the {limits.MAX_FRAME_JPEG_BYTES}-byte limit per frame",
            limit="max_frame_bytes",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in formats:
                raise UnsupportedMedia(
                    f"{name}: {image.format or 'unknown'} images are not accepted; send "
                    + " or ".join(sorted(formats, key=lambda f: f != "JPEG"))
                )
            w, h = image.size
            if w * h > max_pixels:
                raise MediaLimitExceeded(
                    f"{name}: {w}x{h} is over the {max_pixels}-pixel limit per frame",
                    limit="max_frame_pixels",
                )
            rgb = image.convert("RGB")
            rgb.load()
    except (UnsupportedMedia, MediaLimitExceeded):
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise UndecodableMedia(f"{name}: not a decodable image ({exc})") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
