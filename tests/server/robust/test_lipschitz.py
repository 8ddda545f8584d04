"""Tests for the paper's Lipschitz penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from server.robust.lipschitz import input_gradient_norm, lipschitz_penalty


def linear_model() -> nn.Linear:
    """Z(x) = W x: the input gradient of logit i is W[i] for every sample."""
    m = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]))
    return m


def test_penalty_matches_formula_on_linear_model() -> None:
    m = linear_model()
    x = torch.randn(5, 4, requires_grad=True)
    pen = lipschitz_penalty(m(x), x, lam=2.0)
    # Σ_i ‖∇ₓ Z_i‖² over the batch = N · (‖W0‖² + ‖W1‖²) = 5 · (5 + 9); λ/(C·N) = 2/(2·5).
    assert pen.item() == pytest.approx(2.0 / 10 * 5 * 14)


def test_pixel_mean_reduction_divides_by_input_size() -> None:
    m = linear_model()
    x = torch.randn(3, 4, requires_grad=True)
    paper = lipschitz_penalty(m(x), x, 1.0)
    mean = lipschitz_penalty(m(x), x, 1.0, reduction="pixel_mean")
    assert mean.item() == pytest.approx(paper.item() / 4)


def test_penalty_trains_the_model() -> None:
    """Its gradient reaches the weights (double backprop) and descending it shrinks them."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(16, 4, requires_grad=True)
    before = lipschitz_penalty(m(x), x, 1.0)
    before.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters() if p.dim() > 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        xx = x.detach().requires_grad_(True)
        lipschitz_penalty(m(xx), xx, 1.0).backward()
        opt.step()
    xx = x.detach().requires_grad_(True)
    assert lipschitz_penalty(m(xx), xx, 1.0).item() < before.item()


def test_penalty_rejects_bad_input() -> None:
    m = linear_model()
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="require grad"):
        lipschitz_penalty(m(x), x, 1.0)
    x.requires_grad_(True)
    with pytest.raises(ValueError, match="reduction"):
        lipschitz_penalty(m(x), x, 1.0, reduction="sum")


def test_input_gradient_norm_linear() -> None:
    m = linear_model()
    assert input_gradient_norm(m, torch.randn(3, 4)).item() == pytest.approx(5**0.5 + 3.0)
