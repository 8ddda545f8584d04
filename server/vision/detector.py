"""Batched inference of one detector checkpoint on face crops: calibrated P(fake) per crop."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from server.vision.calibration import apply_calibration
from server.vision.card import ModelCard
from server.vision.checkpoint import load_checkpoint
from server.vision.fusion import fuse_conv_bn

# Crops per forward pass: beyond 64 CPU throughput stops improving and a 380 px
# EfficientNet-B4 batch already needs ~2 GB of activations.
MAX_BATCH = 64


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class PixelModel(nn.Module):
    """The detector on [0, 1] RGB tensors at the card's input size; normalisation inside, raw logits out."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


class Detector:
    """A loaded detector: ``predict(crops)`` gives the calibrated probability that each crop is fake."""

    def __init__(self, model: nn.Module, card: ModelCard, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)
        self.card = card
        # In place, as .to() below: this model only ever runs in eval mode (scores, attacks,
        # purification), where folded batch norms compute the same function at half the cost.
        fuse_conv_bn(model.eval())
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self._mean = torch.tensor(card.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(card.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device = "auto") -> Detector:
        """Load and verify the checkpoint in ``model_dir`` (raises ``CheckpointError``)."""
        model, card = load_checkpoint(model_dir, device="cpu")
        return cls(model, card, device)

    def _resize(self, crop: np.ndarray) -> np.ndarray:
        if not (
            isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3
        ):
            raise ValueError("each crop must be an HxWx3 uint8 RGB array")
        h, w = self.card.input_size
        if crop.shape[:2] == (h, w):
            return crop
        shrink = crop.shape[0] > h or crop.shape[1] > w
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def preprocess(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Resize, stack and normalise crops into a channels_last float tensor (N, 3, H, W) on the device."""
        h, w = self.card.input_size
        if len(crops) == 0:
            return torch.empty((0, 3, h, w), device=self.device)
        batch = np.stack([self._resize(c) for c in crops])
        # NHWC uint8 permuted to NCHW is channels_last in memory; float() keeps that layout.
        return self.normalize(torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB (N, 3, H, W) at the input size → the model's normalised channels_last input."""
        x = pixels.to(self.device, torch.float32)
        return ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    def run(self, x: torch.Tensor) -> np.ndarray:
        """Raw logits (N, 2) float32 of normalised input (``preprocess`` / ``normalize``), in
        batches of at most MAX_BATCH, without autograd, bf16 autocast on CUDA."""
        out = [np.zeros((0, 2), np.float32)]
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        )
        with torch.inference_mode(), autocast:
            for start in range(0, len(x), MAX_BATCH):
                out.append(self.model(x[start : start + MAX_BATCH]).float().cpu().numpy())
        return np.concatenate(out)

    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Raw logits (N, 2) float32, index 0 = real, 1 = fake."""
        parts = [self.run(self.preprocess(crops[s : s + MAX_BATCH])) for s in range(0, len(crops), MAX_BATCH)]
        return np.concatenate([np.zeros((0, 2), np.float32), *parts])

    def pixel_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw logits (N, 2) of [0, 1] RGB crops at the input size (what ``pixel_model`` computes,
        through the inference path: no autograd, channels_last, bf16 on CUDA); CPU float32."""
        return torch.from_numpy(self.run(self.normalize(pixels)))

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated P(fake) per crop, float32 shape (N,)."""
        return apply_calibration(self.logits(crops), self.card.calibration)

    def pixel_model(self) -> nn.Module:
        """The detector on [0, 1] RGB input (B, 3, H, W) giving raw logits, for attacks and purification."""
        return PixelModel(self.model, self.card.mean, self.card.std).to(self.device).eval()
