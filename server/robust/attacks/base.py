"""The ``Attack`` template: input contracts, eval mode and seeding around ``forward``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

# Values this far outside [0, 1] are float noise from a resize or a colour conversion, not a
# caller that forgot to divide by 255.
PIXEL_TOLERANCE = 1e-4


def check_images(images: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a float (B, 3, H, W) batch of [0, 1] pixels."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
    if images.numel() and (images.min() < -PIXEL_TOLERANCE or images.max() > 1 + PIXEL_TOLERANCE):
        raise ValueError("images must hold pixels in [0, 1]")


def check_labels(labels: torch.Tensor, batch: int) -> None:
    """Raise ``ValueError`` unless ``labels`` is an integer (B,) vector."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if labels.dtype != torch.long:
        raise ValueError(f"labels must be torch.long, got {labels.dtype}")


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter, or None for a parameter-free model."""
    param = next(model.parameters(), None)
    return None if param is None else param.device


class Attack(ABC):
    """Base of every attack: the model maps [0, 1] pixels (B, 3, H, W) to logits (B, K).

    ``__call__`` checks the contracts, puts the model in eval mode (restoring its mode after),
    moves the batch to the model's device, seeds ``self.generator`` when ``seed`` is given (so
    the same seed gives the same output), and calls ``forward``. With ``targeted=True`` the
    labels are the classes to reach (for deepfakes: 0, "real"); otherwise they are the true
    labels whose loss is maximised. Index 0 is real and 1 is fake.
    """

    def __init__(self, model: nn.Module, *, targeted: bool = False, seed: int | None = None) -> None:
        self.model = model
        self.targeted = targeted
        self.seed = seed
        self.generator: torch.Generator | None = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return adversarial images with the shape, dtype and device of ``images``."""
        check_images(images)
        check_labels(labels, images.shape[0])
        device = model_device(self.model)
        device = images.device if device is None else device
        self.generator = None
        if self.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            # Callers may sit under inference_mode (evaluation loops); attacks need autograd.
            with torch.inference_mode(False), torch.enable_grad():
                x = images.detach().to(device).clamp(0, 1)
                adv = self.forward(x, labels.detach().to(device).clone())
        finally:
            if was_training:
                self.model.train()
        return adv.detach().to(device=images.device, dtype=images.dtype)

    @abstractmethod
    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Craft the adversarial batch; inputs are already checked and on the model's device."""

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample loss the attack ascends: CE of the true label, or minus CE of the target."""
        ce = F.cross_entropy(logits, labels, reduction="none")
        return -ce if self.targeted else ce

    def margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Z_label − max other logit, negated when targeted; the attack wants it below zero."""
        label_logit = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
        return others - label_logit if self.targeted else label_logit - others

    def input_grad(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gradient of the summed ``loss`` w.r.t. the images (model weights get no .grad)."""
        x = images.detach().requires_grad_(True)
        loss = self.loss(self.model(x), labels).sum()
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(targeted={self.targeted}, seed={self.seed})"
