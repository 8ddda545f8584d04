"""Adaptive attacks that know the tamper check (Athalye, Carlini & Wagner, ICML 2018).

``TamperScore`` recomputes a fitted ``TamperScorer``'s score in torch so it can be
differentiated: the forward values are the exact ones (real JPEG, real median filter), the
backward passes through smooth stand-ins (BPDA): a 3x3 box blur for the median, a small
Gaussian blur for JPEG, the identity for bit-depth rounding. ``TamperAwarePGD`` then runs L∞
PGD on "detector says real" plus λ · "tamper score below its threshold", so a sample wins only
if it fools the detector *and* stays unflagged — the defence's worst case.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from server.robust.attacks.base import Attack
from server.robust.attacks.eot import Transform, gaussian_blur, jpeg_bpda
from server.robust.tamper.checks import FEATURE_SIGNS, CheckConfig, consistency_variants, residual_stats
from server.robust.tamper.score import TamperScorer
from server.robust.tamper.squeeze import bit_depth, jpeg, median_filter

# JPEG at quality 75 mostly removes detail above a couple of pixels: a 3-tap Gaussian of this
# width is the smooth stand-in its gradient goes through.
JPEG_SURROGATE_SIGMA = 0.8
# Logit margin past the decision boundary the attack aims for, so 8-bit rounding of the result
# does not push a sample back over it.
DEFAULT_KAPPA = 1.0
# Aim this far (in logit units) below the tamper threshold, for the same reason.
DEFAULT_TAMPER_MARGIN = 0.5


def _straight_through(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """``exact``'s values with ``smooth``'s gradient (BPDA)."""
    return smooth + (exact - smooth).detach()


def box_blur(images: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size`` x ``size`` window, edge-replicated, same size (the median's stand-in)."""
    before, after = size // 2, (size - 1) // 2
    padded = F.pad(images, (before, after, before, after), mode="replicate")
    return F.avg_pool2d(padded, size, stride=1)


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


class TamperScore(nn.Module):
    """A fitted scorer as a differentiable module: images → (detector logits, tamper logit).

    The tamper logit is the score before its final sigmoid; the frame is suspicious when it
    exceeds ``threshold_logit``.
    """

    def __init__(self, scorer: TamperScorer, model: nn.Module) -> None:
        super().__init__()
        if not scorer.fitted:
            raise ValueError("the tamper scorer is not fitted")
        self.scorer = scorer
        self.model = model
        self.config = scorer.config
        self.register_buffer("mean", torch.tensor(scorer.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(scorer.std, dtype=torch.float32))
        weights = scorer.weights if scorer.weights is not None else [0.0] * len(scorer.mean)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        signs = [FEATURE_SIGNS[name] for name in scorer.feature_names]
        self.register_buffer("signs", torch.tensor(signs, dtype=torch.float32))
        self.threshold_logit = _logit(scorer.threshold)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, K), features (B, F)) with the columns of ``scorer.feature_names``."""
        cfg = self.config
        batch = x.shape[0]
        smoothed = _median_bpda(x, cfg.median)
        compressed = _straight_through(
            jpeg(x.detach(), cfg.jpeg_quality), gaussian_blur(x, 3, JPEG_SURROGATE_SIGMA)
        )
        squeezed = {
            "bits": lambda: _bits_bpda(x, cfg.bits),
            "median": lambda: smoothed,
            "jpeg": lambda: compressed,
        }
        variants = [squeezed[name]() for name in cfg.squeezers] + consistency_variants(x, cfg)
        columns = []
        if cfg.gradient:
            logits, grad_cols = self._gradient_stats(x)
        else:
            logits, grad_cols = self.model(x), None
        if variants:
            out = self.model(torch.cat(variants))
            probs = logits.float().softmax(dim=1)
            dist = (out.float().softmax(dim=1).view(len(variants), batch, -1) - probs).abs().sum(dim=2)
            n_squeeze = len(cfg.squeezers)
            if n_squeeze:
                columns.append(dist[:n_squeeze].T)
            if cfg.consistency_k:
                columns.append(dist[n_squeeze:].amax(dim=0, keepdim=True).T)
        if grad_cols is not None:
            columns.append(grad_cols)
        columns.append(residual_stats(x, smoothed, compressed))
        return logits, torch.cat(columns, dim=1)

    def _gradient_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``checks.gradient_stats`` with a graph kept, so the attack can differentiate it."""
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        logits = self.model(x)
        top2 = logits.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
        (grad,) = torch.autograd.grad(margin.sum(), x, create_graph=True)
        floor = 1e-4 / 255
        norm = grad.flatten(1).norm(dim=1).clamp_min(floor)
        boundary = margin.clamp_min(floor) / norm
        return logits, torch.stack([norm.log(), boundary.log()], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(detector logits (B, K), tamper logit (B,))."""
        logits, feats = self.features(x)
        z = (feats - self.mean) / self.std
        if self.scorer.method == "logistic":
            return logits, z @ self.weights + float(self.scorer.bias)
        oriented = torch.where(self.signs == 0, z.abs(), z * self.signs)
        return logits, oriented.amax(dim=1)


class TamperAwarePGD(Attack):
    """L∞ PGD that fools the detector while keeping the tamper score under its threshold.

    Loss per sample (minimised): max(s·(d − offset) + κ, 0) + λ · max(t − (t* − m), 0), where
    d = Z_fake − Z_real is the detector's logit margin, s = +1 to reach "real" (−1 for "fake"),
    ``offset`` is the raw margin at the card's decision threshold, t the tamper logit, t* its
    threshold and m ``tamper_margin``. Each sample keeps the iterate with the lowest loss among
    those that meet both goals (else its last one).

    Arguments:
        model: maps [0, 1] pixels to logits (B, 2), index 1 = fake.
        scorer: the fitted ``TamperScorer`` of that model.
        eps: L∞ budget (default 0.02, the paper's). alpha: step (default 2.5·eps/steps).
        steps: iterations (default 50). lam: weight λ of the tamper term (default 1).
        offset: decision margin of the detector in raw logits (default 0: argmax).
        kappa, tamper_margin: safety margins (logits). targeted: always True (labels = goal).
        seed: seeds the random start.

    Example:
        >>> adv = TamperAwarePGD(net, scorer, eps=0.02, seed=0)(fakes, torch.zeros(n).long())
    """

    def __init__(
        self,
        model: nn.Module,
        scorer: TamperScorer,
        eps: float = 0.02,
        alpha: float | None = None,
        steps: int = 50,
        *,
        lam: float = 1.0,
        offset: float = 0.0,
        kappa: float = DEFAULT_KAPPA,
        tamper_margin: float = DEFAULT_TAMPER_MARGIN,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, targeted=True, seed=seed)
        if eps < 0 or steps < 1 or lam < 0:
            raise ValueError("need eps >= 0, steps >= 1 and lam >= 0")
        self.score = TamperScore(scorer, model)
        self.eps, self.steps, self.lam = float(eps), steps, float(lam)
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / steps
        self.offset, self.kappa, self.tamper_margin = float(offset), float(kappa), float(tamper_margin)

    def losses(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss (B,), both goals met (B,) bool) at ``x``."""
        logits, tamper = self.score(x)
        d = logits[:, 1] - logits[:, 0] - self.offset
        sign = 1.0 - 2.0 * labels.float()
        detector = (sign * d + self.kappa).clamp_min(0)
        hidden = (tamper - (self.score.threshold_logit - self.tamper_margin)).clamp_min(0)
        met = (sign * d < 0) & (tamper < self.score.threshold_logit)
        return detector + self.lam * hidden, met

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Signed descent steps with projection; keeps each sample's best successful iterate."""
        noise = torch.rand(images.shape, generator=self.generator, device=images.device)
        delta = ((2 * noise - 1) * self.eps).to(images.dtype)
        delta = (images + delta).clamp(0, 1) - images
        best = images + delta
        best_loss = torch.full((images.shape[0],), float("inf"), device=images.device)
        for _ in range(self.steps):
            x = (images + delta).detach().requires_grad_(True)
            loss, met = self.losses(x, labels)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            with torch.no_grad():
                improve = met & (loss < best_loss)
                best = torch.where(improve.view(-1, 1, 1, 1), x.detach(), best)
                best_loss = torch.where(improve, loss.detach(), best_loss)
                delta = (delta - self.alpha * grad.sign()).clamp(-self.eps, self.eps)
                delta = (images + delta).clamp(0, 1) - images
        last = images + delta
        return torch.where(torch.isfinite(best_loss).view(-1, 1, 1, 1), best, last).detach()

    def __repr__(self) -> str:
        return (
            f"TamperAwarePGD(eps={self.eps}, alpha={self.alpha}, steps={self.steps}, lam={self.lam}, "
            f"offset={self.offset}, kappa={self.kappa}, seed={self.seed})"
        )


def _median_bpda(x: torch.Tensor, size: int) -> torch.Tensor:
    """The exact median filter forward, a box blur's gradient backward."""
    return _straight_through(median_filter(x.detach(), size), box_blur(x, size))


def _bits_bpda(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Exact bit-depth rounding forward, identity backward."""
    return _straight_through(bit_depth(x.detach(), bits), x)


def squeezer_transforms(config: CheckConfig) -> list[Transform]:
    """The tamper check's own squeezers and resize/pad copies as EOT transforms (BPDA backward).

    An ``EOTPGD`` over these makes the detector's answer agree across the squeezed copies,
    which is what the squeeze and consistency features measure.
    """
    out = [Transform("identity", lambda x, g: x)]
    for name in config.squeezers:
        if name == "jpeg":
            q = config.jpeg_quality
            out.append(Transform(f"jpeg{q}", lambda x, g, q=q: jpeg_bpda(x, q)))
        elif name == "median":
            m = config.median
            out.append(Transform(f"median{m}", lambda x, g, m=m: _median_bpda(x, m)))
        else:
            b = config.bits
            out.append(Transform(f"bits{b}", lambda x, g, b=b: _bits_bpda(x, b)))
    for i in range(config.consistency_k):
        out.append(Transform(f"resize_pad{i}", lambda x, g, i=i: consistency_variants(x, config)[i]))
    return out
