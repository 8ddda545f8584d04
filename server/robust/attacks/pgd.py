"""Projected gradient descent (iterative FGSM) in L∞ or L2."""

from __future__ import annotations

import torch
from torch import nn

from server.robust.attacks.base import Attack
from server.robust.attacks.fgsm import PAPER_EPS

NORMS = ("linf", "l2")
# Default L2 radius when none is given: torchattacks' PGDL2 default. An L2 budget depends on
# the image size, so callers comparing with an L∞ ε should pass their own.
DEFAULT_L2_EPS = 1.0
# Keeps the L2 normalisation finite where the gradient or perturbation is exactly zero.
_TINY = 1e-12


def _per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped (B, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, 1, 1, 1)


class PGD(Attack):
    """Iterative FGSM with projection onto the ε-ball (Madry et al., ICLR 2018, arXiv:1706.06083).

    Distance: L∞ (``norm="linf"``, signed steps; with ``random_start=False`` this is the
    I-FGSM/BIM of Kurakin et al. that the paper's code also has) or L2 (``norm="l2"``,
    normalised-gradient steps).

    Arguments:
        model: maps [0, 1] pixels to logits (B, K).
        eps: budget (default 0.02 for L∞, the paper's FGSM ε; 1.0 for L2).
        alpha: step size (default 2.5 * eps / steps, Madry's rule).
        steps: iterations (default 10).
        norm: "linf" or "l2" (default "linf").
        random_start: start from a random point in the ball (default True).
        targeted: descend towards ``labels`` instead of ascending their loss (default False).
        seed: seeds the random start so equal seeds give equal outputs (default None).

    Shape:
        images (B, 3, H, W) float in [0, 1]; labels (B,) long; output like images.

    Example:
        >>> adv = PGD(model, eps=0.02, steps=10, norm="linf", seed=0)(images, labels)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | None = None,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        *,
        targeted: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, targeted=targeted, seed=seed)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.norm = norm
        self.eps = float(eps if eps is not None else (PAPER_EPS if norm == "linf" else DEFAULT_L2_EPS))
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        self.steps = steps
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / steps
        self.random_start = random_start

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Run ``steps`` projected ascent steps from the (random) start."""
        delta = self._start(images)
        for _ in range(self.steps):
            grad = self.input_grad((images + delta).clamp(0, 1), labels)
            if self.norm == "linf":
                delta = (delta + self.alpha * grad.sign()).clamp(-self.eps, self.eps)
            else:
                delta = delta + self.alpha * grad / _per_sample_l2(grad)
                delta = delta * (self.eps / _per_sample_l2(delta)).clamp(max=1.0)
            # Clamping the image only shrinks each |delta_i|, so the norm stays within budget.
            delta = (images + delta).clamp(0, 1) - images
        return images + delta

    def _start(self, images: torch.Tensor) -> torch.Tensor:
        """Zero, or a random point in the L∞ box / L2 ball, already inside [0, 1]."""
        if not self.random_start or self.eps == 0:
            return torch.zeros_like(images)
        gen = self.generator
        if self.norm == "linf":
            noise = torch.rand(images.shape, generator=gen, device=images.device, dtype=images.dtype)
            delta = (2 * noise - 1) * self.eps
        else:
            direction = torch.randn(images.shape, generator=gen, device=images.device, dtype=images.dtype)
            radius = torch.rand(images.shape[0], generator=gen, device=images.device, dtype=images.dtype)
            delta = direction / _per_sample_l2(direction) * (radius * self.eps).view(-1, 1, 1, 1)
        return (images + delta).clamp(0, 1) - images

    def __repr__(self) -> str:
        return (
            f"PGD(eps={self.eps}, alpha={self.alpha}, steps={self.steps}, norm={self.norm!r}, "
            f"random_start={self.random_start}, targeted={self.targeted}, seed={self.seed})"
        )
