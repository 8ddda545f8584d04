"""Feature squeezers (Xu, Evans & Qi, NDSS 2018): each maps a [0, 1] batch to a squeezed one."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# Xu et al.'s ImageNet settings: 5-bit colour depth and a 2x2 / 3x3 median; JPEG at quality
# 75 is the common web re-encode level, so clean video frames barely move under it.
DEFAULT_BITS = 5
DEFAULT_MEDIAN = 3
DEFAULT_JPEG_QUALITY = 75
# Window sizes for which OpenCV filters float32 images (its 8-bit-only sizes are not used).
_CV2_MEDIAN_SIZES = (3, 5)


def bit_depth(images: torch.Tensor, bits: int = DEFAULT_BITS) -> torch.Tensor:
    """Quantise every channel to ``bits`` bits (1–8)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    levels = 2**bits - 1
    return torch.round(images * levels) / levels


def median_filter(images: torch.Tensor, size: int = DEFAULT_MEDIAN) -> torch.Tensor:
    """Per-channel median over a ``size`` x ``size`` window (edge-replicate borders, same size).

    Matches ``scipy.ndimage.median_filter(mode="nearest")``; not differentiable on CPU
    float32 with size 3 or 5, where OpenCV does the work.
    """
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    if images.device.type == "cpu" and images.dtype == torch.float32 and size in _CV2_MEDIAN_SIZES:
        return _median_cv2(images, size)
    b, c, h, w = images.shape
    # Even windows follow scipy.ndimage (Xu et al.'s 2x2): one more pixel before the centre
    # than after, and the upper of the two middle values.
    before, after = size // 2, (size - 1) // 2
    padded = F.pad(images.reshape(b * c, 1, h, w), (before, after, before, after), mode="replicate")
    patches = F.unfold(padded, kernel_size=size)
    return patches.kthvalue(size * size // 2 + 1, dim=1).values.reshape(b, c, h, w)


def _median_cv2(images: torch.Tensor, size: int) -> torch.Tensor:
    """OpenCV's float median (about 100x faster than unfold + median on CPU), same result."""
    arrays = images.detach().permute(0, 2, 3, 1).contiguous().numpy()
    out = np.stack([cv2.medianBlur(a, size) for a in arrays])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def jpeg(images: torch.Tensor, quality: int = DEFAULT_JPEG_QUALITY) -> torch.Tensor:
    """Encode and decode each image as JPEG at ``quality`` (OpenCV, 4:2:0); not differentiable."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    out = np.empty_like(arrays)
    for i, rgb in enumerate(arrays):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
        if not ok:
            raise RuntimeError("OpenCV failed to encode a JPEG")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    decoded = torch.from_numpy(out).permute(0, 3, 1, 2)
    return decoded.to(device=images.device, dtype=images.dtype) / 255
