"""Per-frame tamper features: squeezing, transform consistency, input gradient, noise residual.

The squeezed and resized copies of a batch (and the batch itself, unless the caller passes
the logits it already has) go through the model in one no-grad forward (or through the
caller's ``forward``, e.g. the server's shared inference batcher); the optional
gradient features cost one forward and one input-only backward more. The noise-residual
statistics need no model at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.robust.attacks.base import check_images, model_device
from server.robust.tamper.squeeze import (
    DEFAULT_BITS,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MEDIAN,
    bit_depth,
    jpeg,
    median_filter,
)

# Raw logits of a batch of [0, 1] crops at the model's input size, without autograd: what the
# no-grad forward of the checks may be routed through instead of calling the model itself.
Forward = Callable[[torch.Tensor], torch.Tensor]

SQUEEZERS = ("bits", "median", "jpeg")
GRADIENT_FEATURES = ("grad_norm", "boundary")
RESIDUAL_FEATURES = ("residual_energy", "residual_mad", "residual_kurtosis", "jpeg_residual")
# +1: adversarial frames score higher; -1: lower; 0: either way. Only the unsupervised
# fallback uses these; the logistic combination learns its own signs. Dense adversarial
# noise raises the residual's energy and typical size and lowers the heavy-tailed kurtosis
# of natural residuals (edges); minimal attacks end close to the decision boundary.
FEATURE_SIGNS = {
    "squeeze_bits": 1,
    "squeeze_median": 1,
    "squeeze_jpeg": 1,
    "consistency": 1,
    "grad_norm": 0,
    "boundary": -1,
    "residual_energy": 1,
    "residual_mad": 1,
    "residual_kurtosis": -1,
    "jpeg_residual": 1,
}
# Keeps logs of exact zeros finite (clean 8-bit frames often have an all-zero median
# residual in flat areas); a tenth of one 8-bit level.
_LOG_FLOOR = 1e-4 / 255
# Every n-th residual value is enough for a median; the full sort costs more than the filter.
_MAD_STRIDE = 8


@dataclass(frozen=True)
class CheckConfig:
    """Which checks run and their settings; stored in the scorer's JSON.

    The defaults fit the issue's CPU budget (at most 3x the detector's own forward): one JPEG
    copy and one resize/pad copy through the model, no gradient; the median filter still
    feeds the residual statistics. Each extra squeezer or resize copy adds about one forward
    (``"bits"`` barely moves on 8-bit video frames), ``gradient=True`` about 2.5. With no
    squeezers, no resize copies and no gradient the model is not called at all.
    """

    squeezers: tuple[str, ...] = ("jpeg",)
    bits: int = DEFAULT_BITS
    median: int = DEFAULT_MEDIAN
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    # Random shrink-then-pad copies (Xie et al., ICLR 2018), scale drawn in this range.
    consistency_k: int = 1
    scale_range: tuple[float, float] = (0.9, 0.97)
    gradient: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.squeezers) - set(SQUEEZERS)
        if unknown or len(set(self.squeezers)) != len(self.squeezers):
            raise ValueError(f"squeezers must be distinct names from {SQUEEZERS}, got {self.squeezers}")
        if self.consistency_k < 0:
            raise ValueError(f"consistency_k must be >= 0, got {self.consistency_k}")
        if not 0 < self.scale_range[0] <= self.scale_range[1] <= 1:
            raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {self.scale_range}")

    def feature_names(self) -> tuple[str, ...]:
        """Names of the feature columns this config produces, in order."""
        names = [f"squeeze_{s}" for s in self.squeezers]
        names += ["consistency"] if self.consistency_k else []
        names += list(GRADIENT_FEATURES) if self.gradient else []
        return (*names, *RESIDUAL_FEATURES)

    @property
    def model_variants(self) -> int:
        """Copies of each crop the variant forward pass sees."""
        return len(self.squeezers) + self.consistency_k

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {**asdict(self), "squeezers": list(self.squeezers), "scale_range": list(self.scale_range)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckConfig:
        """Inverse of ``to_dict``."""
        data = dict(data)
        for key in ("squeezers", "scale_range"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def resize_pad(images: torch.Tensor, scale: float, top: float, left: float) -> torch.Tensor:
    """Shrink by ``scale`` and pad back to size (edge replicate), offset by fractions top/left."""
    h, w = images.shape[-2:]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
    pt, pl = round((h - nh) * top), round((w - nw) * left)
    return F.pad(small, (pl, w - nw - pl, pt, h - nh - pt), mode="replicate")


def consistency_variants(images: torch.Tensor, config: CheckConfig) -> list[torch.Tensor]:
    """``consistency_k`` resize/pad copies; the draws depend only on ``config.seed``."""
    gen = torch.Generator().manual_seed(config.seed)
    low, high = config.scale_range
    out = []
    for _ in range(config.consistency_k):
        scale, top, left = torch.rand(3, generator=gen).tolist()
        out.append(resize_pad(images, low + (high - low) * scale, top, left))
    return out


def residual_stats(images: torch.Tensor, smoothed: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
    """(B, 4): the median residual's log energy, log median |r| and kurtosis; log JPEG change."""
    r = (images - smoothed).flatten(1)
    r2 = r * r  # r * r, not pow(): pow(4) takes a slow generic path on CPU
    energy = r2.mean(dim=1)
    mad = r[:, ::_MAD_STRIDE].abs().median(dim=1).values
    kurtosis = (r2 * r2).mean(dim=1) / (energy * energy).clamp_min(_LOG_FLOOR**2)
    jpeg_energy = (images - compressed).pow(2).flatten(1).mean(dim=1)
    logs = torch.stack([energy, mad, jpeg_energy], dim=1).clamp_min(_LOG_FLOOR).log()
    return torch.stack([logs[:, 0], logs[:, 1], kurtosis, logs[:, 2]], dim=1)


def gradient_stats(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and (B, 2): log ‖∇ₓ margin‖₂ and log(margin / ‖∇ₓ margin‖₂), one backward."""
    x = images.detach().clone().requires_grad_(True)
    logits = model(x)
    top2 = logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    (grad,) = torch.autograd.grad(margin.sum(), x)
    norm = grad.flatten(1).norm(dim=1).clamp_min(_LOG_FLOOR)
    boundary = margin.detach().clamp_min(_LOG_FLOOR) / norm
    return logits.detach(), torch.stack([norm.log(), boundary.log()], dim=1)


def tamper_features(
    model: nn.Module,
    images: torch.Tensor,
    config: CheckConfig | None = None,
    *,
    logits: torch.Tensor | None = None,
    forward: Forward | None = None,
) -> np.ndarray:
    """(B, F) float64 features of a batch of [0, 1] crops; columns ``config.feature_names()``.

    ``logits`` (B, K), if the detector already scored these crops, saves one forward pass
    (ignored when ``config.gradient`` needs its own forward with autograd). ``forward`` runs the
    no-grad forward instead of ``model`` (same weights; the gradient check still uses ``model``).
    """
    return _checked(model, images, config, logits, forward)[0]


def tamper_features_and_logits(
    model: nn.Module,
    images: torch.Tensor,
    config: CheckConfig | None = None,
    *,
    logits: torch.Tensor | None = None,
    forward: Forward | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """``tamper_features`` and the model's logits of ``images`` (the given ones, or those of the
    same forward): a caller without logits gets the detector's scores from the check's forward."""
    features, out = _checked(model, images, config, logits, forward)
    if out is None:  # no model variants and no gradient: the model has not run yet
        device = model_device(model)
        with torch.inference_mode(False), torch.no_grad():
            out = (forward or model)(images if device is None else images.to(device))
    return features, out


def _checked(
    model: nn.Module,
    images: torch.Tensor,
    config: CheckConfig | None,
    logits: torch.Tensor | None,
    forward: Forward | None,
) -> tuple[np.ndarray, torch.Tensor | None]:
    config = config or CheckConfig()
    check_images(images)
    if logits is not None and logits.shape[0] != images.shape[0]:
        raise ValueError(f"logits must have {images.shape[0]} rows, got {tuple(logits.shape)}")
    was_training = model.training
    if was_training:  # toggling walks every submodule: ~1 ms on a deep net, so only when needed
        model.eval()
    try:
        # The request path may run under inference_mode; the gradient check needs autograd.
        with torch.inference_mode(False):
            device = model_device(model)
            x = images.to(images.device if device is None else device).clone()
            return _features(model, x, config, logits, forward or model)
    finally:
        if was_training:
            model.train()


def _features(
    model: nn.Module, x: torch.Tensor, config: CheckConfig, logits: torch.Tensor | None, forward: Forward
) -> tuple[np.ndarray, torch.Tensor | None]:
    """Features and the logits of ``x`` if known or computed on the way (model in eval mode,
    autograd available)."""
    batch = x.shape[0]
    smoothed = median_filter(x, config.median)
    compressed = jpeg(x, config.jpeg_quality)
    squeezed = {
        "bits": lambda: bit_depth(x, config.bits),
        "median": lambda: smoothed,
        "jpeg": lambda: compressed,
    }
    variants = [squeezed[name]() for name in config.squeezers] + consistency_variants(x, config)
    columns = []
    grad_cols = None
    if config.gradient:
        with torch.enable_grad():
            logits, grad_cols = gradient_stats(model, x)
    if variants:
        with torch.no_grad():
            if logits is None:
                out = forward(torch.cat([x, *variants]))
                logits, out = out[:batch], out[batch:]
            else:
                out = forward(torch.cat(variants))
        probs = logits.detach().to(out.device).float().softmax(dim=1)
        dist = (out.float().softmax(dim=1).view(len(variants), batch, -1) - probs).abs().sum(dim=2)
    n_squeeze = len(config.squeezers)
    if n_squeeze:
        columns.append(dist[:n_squeeze].T)
    if config.consistency_k:
        columns.append(dist[n_squeeze:].amax(dim=0, keepdim=True).T)
    if grad_cols is not None:
        columns.append(grad_cols)
    columns.append(residual_stats(x, smoothed, compressed))
    features = torch.cat([c.cpu().double() for c in columns], dim=1).numpy()
    return features, None if logits is None else logits.detach()
