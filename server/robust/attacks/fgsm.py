"""Fast Gradient Sign Method, the paper's first attack."""

from __future__ import annotations

import torch
from torch import nn

from server.robust.attacks.base import Attack

# The paper's budget (adv_examples.py: fgsm(model, criterion, 0.02, ...)): about 5/255.
PAPER_EPS = 0.02


class FGSM(Attack):
    """One signed-gradient step of size ``eps`` (Goodfellow et al., ICLR 2015, arXiv:1412.6572).

    Distance: L∞. Gandhi & Jain used it untargeted with ε = 0.02 on [0, 1] pixels, clamped
    to [0, 1].

    Arguments:
        model: maps [0, 1] pixels to logits (B, K).
        eps: L∞ budget (default 0.02, the paper's).
        targeted: step towards ``labels`` instead of away from them (default False).
        seed: unused (FGSM is deterministic); accepted so every attack takes it.

    Shape:
        images (B, 3, H, W) float in [0, 1]; labels (B,) long; output like images.

    Example:
        >>> adv = FGSM(model, eps=0.02)(images, labels)
    """

    def __init__(
        self, model: nn.Module, eps: float = PAPER_EPS, *, targeted: bool = False, seed: int | None = None
    ) -> None:
        super().__init__(model, targeted=targeted, seed=seed)
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = eps

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x + eps * sign(grad of the attack loss), clamped to [0, 1]."""
        grad = self.input_grad(images, labels)
        return (images + self.eps * grad.sign()).clamp(0, 1)

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps}, targeted={self.targeted})"
