"""Classical denoisers run before Deep Image Prior on the CPU path, and the resizes around it (pure torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# 3x3 median: removes isolated ±ε sign flips of FGSM-style noise while keeping edges.
MEDIAN_KERNEL = 3
# Bilateral 5x5: spatial σ 1.5 px, range σ 0.1 (on [0, 1] pixels) smooths a ±8/255 perturbation
# (well inside the range kernel) but not real edges (contrast ≫ 0.1).
BILATERAL_KERNEL = 5
BILATERAL_SIGMA_SPACE = 1.5
BILATERAL_SIGMA_RANGE = 0.1


def _patches(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, kernel², H, W) reflection-padded neighbourhoods."""
    b, c, h, w = x.shape
    pad = kernel // 2
    cols = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel)
    return cols.view(b, c, kernel * kernel, h, w)


def median(x: torch.Tensor, kernel: int = MEDIAN_KERNEL) -> torch.Tensor:
    """Per-channel median filter of (B, C, H, W)."""
    return _patches(x, kernel).median(dim=2).values


def bilateral(
    x: torch.Tensor,
    kernel: int = BILATERAL_KERNEL,
    sigma_space: float = BILATERAL_SIGMA_SPACE,
    sigma_range: float = BILATERAL_SIGMA_RANGE,
) -> torch.Tensor:
    """Bilateral filter of (B, 3, H, W); the range weight uses the RGB distance so colours stay together."""
    patches = _patches(x, kernel)  # (B, C, K², H, W)
    r = torch.arange(kernel, dtype=x.dtype, device=x.device) - kernel // 2
    space = (-(r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) / (2 * sigma_space**2)).reshape(1, -1, 1, 1)
    dist = (patches - x.unsqueeze(2)).square().sum(dim=1)  # (B, K², H, W)
    weight = torch.exp(space - dist / (2 * sigma_range**2))
    return (patches * weight.unsqueeze(1)).sum(dim=2) / weight.sum(dim=1, keepdim=True)


PREFILTERS = {"none": None, "median": median, "bilateral": bilateral}


def prefilter(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply the named classical denoiser ("none" returns ``x``)."""
    fn = PREFILTERS[name]
    return x if fn is None else fn(x).clamp(0, 1)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to ``size`` (H, W), antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
