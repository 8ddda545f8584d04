"""Folding batch norm into convolutions: same outputs, fewer ops, other layouts untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from server.vision.fusion import fuse_conv_bn
from server.vision.registry import create_model


def _trained_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine terms, so folding them is not a no-op."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def test_unmask_tiny_folds_every_pair_and_computes_the_same_function() -> None:
    torch.manual_seed(0)
    model = _trained_bn(create_model("unmask_tiny"))
    x = torch.rand(4, 3, 128, 128)
    with torch.no_grad():
        before = model(x)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fuse_conv_bn(model) == n_bn == 13
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    # Gradients still flow (attacks and purification differentiate through the detector).
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_other_layouts_are_left_alone_and_training_models_refused() -> None:
    lone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    assert fuse_conv_bn(lone) == 0 and isinstance(lone[2], nn.BatchNorm2d)
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
