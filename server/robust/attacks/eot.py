"""Compression-robust PGD: Expectation over Transformation, as Hussain et al. ran it on video."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from server.robust.attacks.base import Attack
from server.robust.tamper.squeeze import jpeg

# Hussain et al. (WACV 2021) attack_algos.py `robust_fgsm`: budget, step, iterations, hinge
# margin κ and the stop rule "every transform gives the wanted class probability >= 0.95".
HUSSAIN_EPS = 16 / 255
HUSSAIN_ALPHA = 1 / 255
HUSSAIN_STEPS = 100
HUSSAIN_KAPPA = 10.0
HUSSAIN_DESIRED_PROB = 0.95
HUSSAIN_NOISE_STD = 0.01
HUSSAIN_BLURS = ((5, 5.0), (5, 10.0), (7, 5.0), (7, 10.0))
HUSSAIN_SHIFTS = ((10, 10), (10, -10), (-10, 10), (-10, -10), (20, 20), (20, -20), (-20, 10), (-20, -20))
HUSSAIN_SCALES = (0.1, 0.2, 0.3)
# Added here (not in Hussain et al.): web video is re-encoded, and JPEG at these qualities
# stands in for intra-frame H.264 loss; gradients pass straight through (BPDA).
JPEG_QUALITIES = (75, 90)


@dataclass(frozen=True)
class Transform:
    """A named differentiable image transform; ``fn(images, generator)`` keeps the shape."""

    name: str
    fn: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.fn(images, generator)


def gaussian_blur(images: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur with reflect padding."""
    coords = torch.arange(kernel, device=images.device, dtype=images.dtype) - (kernel - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    weight = (g[:, None] * g[None, :]).expand(3, 1, kernel, kernel)
    pad = kernel // 2
    return F.conv2d(F.pad(images, (pad, pad, pad, pad), mode="reflect"), weight, groups=3)


def translate(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Shift by (dx, dy) pixels, filling the uncovered border with zeros (warp_perspective)."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + h, left : left + w]


def resize_down_up(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear downscale by ``factor`` and back to the original size."""
    h, w = images.shape[-2:]
    small = (max(1, math.floor(h * factor)), max(1, math.floor(w * factor)))
    down = F.interpolate(images, size=small, mode="bilinear", align_corners=True)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=True)


def jpeg_bpda(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG round trip forward, identity backward (BPDA, Athalye et al. 2018)."""
    return images + (jpeg(images, quality) - images).detach()


def gaussian_noise(images: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """Add N(0, std²) noise and clamp to [0, 1]."""
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + std * noise).clamp(0, 1)


def hussain_transforms(jpeg_qualities: Sequence[int] = JPEG_QUALITIES) -> list[Transform]:
    """Hussain et al.'s robust set (identity, noise, 4 blurs, 8 shifts, 3 rescales) plus JPEG."""
    out = [Transform("identity", lambda x, g: x)]
    out.append(Transform("noise", lambda x, g: gaussian_noise(x, HUSSAIN_NOISE_STD, g)))
    for k, s in HUSSAIN_BLURS:
        out.append(Transform(f"blur{k}_s{s:g}", lambda x, g, k=k, s=s: gaussian_blur(x, k, s)))
    for dx, dy in HUSSAIN_SHIFTS:
        out.append(Transform(f"shift{dx:+d}{dy:+d}", lambda x, g, dx=dx, dy=dy: translate(x, dx, dy)))
    for f in HUSSAIN_SCALES:
        out.append(Transform(f"resize{f:g}", lambda x, g, f=f: resize_down_up(x, f)))
    for q in jpeg_qualities:
        out.append(Transform(f"jpeg{q}", lambda x, g, q=q: jpeg_bpda(x, q)))
    return out


class EOTPGD(Attack):
    """L∞ PGD on the loss averaged over image transforms (Athalye et al., ICML 2018, EOT).

    Hussain et al. ("Adversarial Deepfakes", WACV 2021, arXiv:2002.12749) made perturbations
    survive video compression this way: every step averages a hinge loss on the logits,
    max(Z_y − max_{i≠y} Z_i + κ, 0) (untargeted; targeted reaches ``labels``), over a fixed
    set of transforms — identity, Gaussian noise, blurs, translations, down/up-scaling — and
    a sample stops once every transform gives the wanted class probability ≥ 0.95. We add
    JPEG with straight-through gradients. All transformed copies go through the model in one
    batch per step.

    Distance: L∞.

    Arguments:
        model: maps [0, 1] pixels to logits (B, K).
        eps: L∞ budget (default 16/255, Hussain et al.'s).
        alpha: step size (default 1/255).
        steps: maximum iterations (default 100).
        transforms: list of ``Transform`` (default ``hussain_transforms()``, 21 of them).
        samples: draw this many transforms per step instead of using all (default None: all).
        kappa: hinge margin κ on the logits (default 10).
        desired_prob: per-sample stop when every transform reaches it (default 0.95; None
            never stops early).
        targeted: reach ``labels`` (e.g. 0, real) instead of leaving them (default False).
        seed: seeds the noise transform and the transform draws (default None).

    Shape:
        images (B, 3, H, W) float in [0, 1]; labels (B,) long; output like images.

    Example:
        >>> real = torch.zeros(len(images), dtype=torch.long)
        >>> adv = EOTPGD(model, steps=50, targeted=True, seed=0)(fakes, real)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = HUSSAIN_EPS,
        alpha: float = HUSSAIN_ALPHA,
        steps: int = HUSSAIN_STEPS,
        transforms: Sequence[Transform] | None = None,
        *,
        samples: int | None = None,
        kappa: float = HUSSAIN_KAPPA,
        desired_prob: float | None = HUSSAIN_DESIRED_PROB,
        targeted: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, targeted=targeted, seed=seed)
        if eps < 0 or alpha <= 0 or steps < 1:
            raise ValueError("need eps >= 0, alpha > 0 and steps >= 1")
        self.eps, self.alpha, self.steps = float(eps), float(alpha), steps
        self.transforms = list(transforms) if transforms is not None else hussain_transforms()
        if not self.transforms:
            raise ValueError("transforms must not be empty")
        if samples is not None and not 1 <= samples <= len(self.transforms):
            raise ValueError(f"samples must be in 1..{len(self.transforms)}, got {samples}")
        self.samples = samples
        self.kappa = kappa
        self.desired_prob = desired_prob

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Signed steps on the mean hinge loss; finished samples are frozen."""
        adv = images.clone()
        active = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.steps):
            transforms = self._draw()
            x = adv.detach().requires_grad_(True)
            logits = self.model(torch.cat([t(x, self.generator) for t in transforms]))
            n = len(transforms)
            y = labels.repeat(n)
            hinge = (self.margin(logits, y) + self.kappa).clamp_min(0).view(n, -1).mean(dim=0)
            if self.desired_prob is not None:
                prob = logits.softmax(dim=1).gather(1, y[:, None]).view(n, -1)
                wanted = prob >= self.desired_prob if self.targeted else prob <= 1 - self.desired_prob
                active &= ~wanted.all(dim=0)
                if not active.any():
                    break
            (grad,) = torch.autograd.grad(hinge.sum(), x)
            step = (adv - self.alpha * grad.sign()).detach()
            delta = (step - images).clamp(-self.eps, self.eps)
            step = (images + delta).clamp(0, 1)
            adv = torch.where(active.view(-1, 1, 1, 1), step, adv)
        return adv

    def _draw(self) -> list[Transform]:
        """All transforms, or ``samples`` of them drawn without replacement."""
        if self.samples is None:
            return self.transforms
        device = self.generator.device if self.generator is not None else "cpu"
        order = torch.randperm(len(self.transforms), generator=self.generator, device=device)
        return [self.transforms[i] for i in order[: self.samples].tolist()]

    def __repr__(self) -> str:
        names = [t.name for t in self.transforms]
        return (
            f"EOTPGD(eps={self.eps}, alpha={self.alpha}, steps={self.steps}, transforms={names}, "
            f"samples={self.samples}, targeted={self.targeted}, seed={self.seed})"
        )
