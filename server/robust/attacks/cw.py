"""Carlini–Wagner L2 with the paper's settings and its greedy 8-bit rounding."""

from __future__ import annotations

import torch
from torch import nn

from server.robust.attacks.base import Attack

# Gandhi & Jain's call of kkew3/pytorch-cw2 L2Adversary (adv_examples.py `carlini`).
PAPER_CONFIDENCE = 200.0
PAPER_C_RANGE = (1e2, 1e4)
PAPER_SEARCH_STEPS = 5
PAPER_MAX_STEPS = 1000
PAPER_LR = 1e-2
# kkew3 constants: early-abort tolerance, std of the random init, and the atanh shrink that
# keeps pixels at exactly 0 or 1 finite in tanh space.
ABORT_TOLERANCE = 1e-4
INIT_STD = 1e-3
ATANH_EPS = 1e-6


class CWL2(Attack):
    """Carlini & Wagner's L2 attack (IEEE S&P 2017, arXiv:1608.04644) as the paper ran it.

    Distance: L2. Minimises ||δ||² + c·max(Z_y − max_{i≠y} Z_i + κ, 0) (untargeted; targeted
    swaps the roles) with Adam in tanh space, so pixels stay in [0, 1] without clipping, and
    binary-searches c per sample. As in kkew3/pytorch-cw2, which the paper used, the
    perturbation and Adam state carry over between search steps, optimisation aborts early
    when the loss stops falling (checked every max_steps/10 steps), a sample counts as
    fooled only when the margin exceeds κ, and a sample never fooled is returned unchanged.
    The result is then rounded to 8 bits greedily: each pixel goes to the neighbouring level
    in the direction that raises the attack loss (the paper's ``round(255x + 0.5·sign g)/255``;
    pixels already on a level stay there, where the paper's half-to-even rounding could move
    them by one level).

    Arguments:
        model: maps [0, 1] pixels to logits (B, K).
        confidence: κ (default 200, the paper's).
        c_range: (initial c, upper bound for c) (default (1e2, 1e4)).
        search_steps: binary-search steps over c (default 5).
        max_steps: Adam steps per search step (default 1000).
        lr: Adam learning rate (default 1e-2).
        abort_early: stop a search step when the loss stalls (default True).
        init_rand: start from N(0, 1e-3) in tanh space (default True, the paper's).
        round_8bit: apply the greedy 8-bit rounding (default True).
        targeted: reach ``labels`` instead of leaving them (default False).
        seed: seeds the random init (default None).

    Shape:
        images (B, 3, H, W) float in [0, 1]; labels (B,) long; output like images, values
        multiples of 1/255 when ``round_8bit``.

    Example:
        >>> adv = CWL2(model, max_steps=100, seed=0)(images, labels)
    """

    def __init__(
        self,
        model: nn.Module,
        confidence: float = PAPER_CONFIDENCE,
        c_range: tuple[float, float] = PAPER_C_RANGE,
        search_steps: int = PAPER_SEARCH_STEPS,
        max_steps: int = PAPER_MAX_STEPS,
        lr: float = PAPER_LR,
        *,
        abort_early: bool = True,
        init_rand: bool = True,
        round_8bit: bool = True,
        targeted: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, targeted=targeted, seed=seed)
        if len(c_range) != 2 or not 0 < c_range[0] < c_range[1]:
            raise ValueError(f"c_range must be (low, high) with 0 < low < high, got {c_range}")
        if search_steps < 1 or max_steps < 1:
            raise ValueError("search_steps and max_steps must be >= 1")
        self.confidence = float(confidence)
        self.c_range = (float(c_range[0]), float(c_range[1]))
        self.search_steps = search_steps
        self.max_steps = max_steps
        self.lr = lr
        self.abort_early = abort_early
        self.init_rand = init_rand
        self.round_8bit = round_8bit

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary search over c, keep the smallest fooling perturbation, then round."""
        batch = images.shape[0]
        lower = torch.zeros(batch, device=images.device)
        upper = torch.full((batch,), self.c_range[1], device=images.device)
        const = torch.full((batch,), self.c_range[0], device=images.device)
        best_l2 = torch.full((batch,), float("inf"), device=images.device)
        best_adv = images.clone()
        x_tanh = torch.atanh((images * 2 - 1) * (1 - ATANH_EPS))
        pert = torch.zeros_like(images)
        if self.init_rand:
            pert = torch.randn(images.shape, generator=self.generator, device=images.device) * INIT_STD
        pert.requires_grad_(True)
        optimizer = torch.optim.Adam([pert], lr=self.lr)
        for _ in range(self.search_steps):
            step_l2 = torch.full((batch,), float("inf"), device=images.device)
            self._optimise(images, labels, x_tanh, pert, optimizer, const, step_l2, best_l2, best_adv)
            found = torch.isfinite(step_l2)
            # Success: lower c (bisect once an upper bound is known). Failure: raise c,
            # x10 until c nears the top of the range, then bisect.
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bounded = upper < self.c_range[1] * 0.1
            mid = (lower + upper) / 2
            const = torch.where(
                found, torch.where(bounded, mid, const), torch.where(bounded, mid, const * 10)
            )
        return self._round(best_adv, labels) if self.round_8bit else best_adv

    def _optimise(self, images, labels, x_tanh, pert, optimizer, const, step_l2, best_l2, best_adv) -> None:
        """Adam steps for one c; updates the per-step and overall best records in place."""
        check_every = max(1, self.max_steps // 10)
        prev_loss = float("inf")
        for step in range(self.max_steps):
            adv = (torch.tanh(x_tanh + pert) + 1) / 2
            logits = self.model(adv)
            l2 = (adv - images).flatten(1).pow(2).sum(dim=1)
            margin = self.margin(logits, labels)
            loss = (l2 + const * (margin + self.confidence).clamp_min(0)).sum()
            # autograd.grad, not backward(): the detector's weights must not collect .grad.
            (pert.grad,) = torch.autograd.grad(loss, pert)
            optimizer.step()
            if self.abort_early and step % check_every == 0:
                if loss.item() > prev_loss * (1 - ABORT_TOLERANCE):
                    break
                prev_loss = loss.item()
            with torch.no_grad():
                fooled = margin + self.confidence < 0
                better = fooled & (l2 < step_l2)
                step_l2.copy_(torch.where(better, l2, step_l2))
                overall = fooled & (l2 < best_l2)
                best_l2.copy_(torch.where(overall, l2, best_l2))
                best_adv.copy_(torch.where(overall.view(-1, 1, 1, 1), adv, best_adv))

    def _round(self, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Greedy 8-bit rounding: ceil where the loss gradient is positive, floor where negative."""
        grad = self.input_grad(adv, labels)
        levels = adv * 255
        rounded = torch.where(grad > 0, levels.ceil(), torch.where(grad < 0, levels.floor(), levels.round()))
        return rounded.clamp(0, 255) / 255

    def __repr__(self) -> str:
        return (
            f"CWL2(confidence={self.confidence}, c_range={self.c_range}, search_steps={self.search_steps}, "
            f"max_steps={self.max_steps}, lr={self.lr}, targeted={self.targeted}, seed={self.seed})"
        )
