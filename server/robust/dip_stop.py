"""Automatic stopping rules for Deep Image Prior, tracked per network on the device.

* ``WindowedVariance`` — ES-WMV (Wang et al., "Early Stopping for Deep Image Prior",
  arXiv:2112.06074): the variance of the last W outputs falls while the network fits the image
  and rises once it starts fitting the noise; stop when its minimum has not improved for
  ``patience`` iterations and return the output kept at the minimum.
* ``ScoreStability`` — the detector's P(fake) of the smoothed output has moved by at most
  ``delta`` for ``patience`` consecutive checks.

Both update with tensor operations only, so the host reads them (a device sync) only when it
decides, every few iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class WindowedVariance:
    """ES-WMV for ``n`` networks: a ring buffer of the last ``window`` outputs at ``size``×``size``.

    VAR_t = mean over the window of ||x_i − mean(window)||², per pixel. ``best_iter[j]`` is the
    iteration with the smallest VAR seen (−1 until the window first fills).
    """

    def __init__(self, n: int, window: int, patience: int, size: int, device: torch.device) -> None:
        if window < 2 or patience < 1:
            raise ValueError(f"window must be >= 2 and patience >= 1, got {window} and {patience}")
        self.window, self.patience, self.size = window, patience, size
        self.buffer = torch.zeros(n, window, 3 * size * size, device=device)
        self.best_var = torch.full((n,), float("inf"), device=device)
        self.best_iter = torch.full((n,), -1, dtype=torch.long, device=device)
        self.pushed = 0

    def update(self, iteration: int, outputs: torch.Tensor) -> torch.Tensor | None:
        """Push outputs (n, 3, H, W); return the (n,) mask of networks whose minimum improved, or None."""
        small = outputs.detach().float()
        if small.shape[-1] != self.size or small.shape[-2] != self.size:
            small = F.interpolate(small, size=(self.size, self.size), mode="area")
        self.buffer[:, self.pushed % self.window] = small.flatten(1)
        self.pushed += 1
        if self.pushed < self.window:
            return None
        var = (self.buffer - self.buffer.mean(dim=1, keepdim=True)).square().mean(dim=(1, 2))
        improved = var < self.best_var
        self.best_var = torch.where(improved, var, self.best_var)
        self.best_iter = torch.where(improved, iteration, self.best_iter)
        return improved

    def fired(self, iteration: int) -> torch.Tensor:
        """(n,) bool: the minimum is at least ``patience`` iterations old."""
        return (self.best_iter >= 0) & (iteration - self.best_iter >= self.patience)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the networks at positions ``keep`` (after the group is compacted)."""
        self.buffer = self.buffer[keep]
        self.best_var = self.best_var[keep]
        self.best_iter = self.best_iter[keep]


class ScoreStability:
    """For ``n`` networks: how many consecutive checks moved P(fake) by at most ``delta``."""

    def __init__(self, n: int, delta: float, patience: int, device: torch.device) -> None:
        if delta < 0 or patience < 1:
            raise ValueError(f"delta must be >= 0 and patience >= 1, got {delta} and {patience}")
        self.delta, self.patience = delta, patience
        self.last = torch.full((n,), float("nan"), device=device)
        self.streak = torch.zeros(n, dtype=torch.long, device=device)

    def update(self, prob_fake: torch.Tensor) -> None:
        """Record one check's P(fake) per network, shape (n,)."""
        p = prob_fake.detach().float()
        stable = (p - self.last).abs() <= self.delta  # NaN on the first check compares False
        self.streak = torch.where(stable, self.streak + 1, torch.zeros_like(self.streak))
        self.last = p

    def fired(self) -> torch.Tensor:
        """(n,) bool: stable for ``patience`` consecutive checks."""
        return self.streak >= self.patience

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the networks at positions ``keep``."""
        self.last = self.last[keep]
        self.streak = self.streak[keep]
