"""Classical prefilters and resizes of the CPU purification path."""

from __future__ import annotations

import pytest
import torch

from server.robust.dip_prefilter import bilateral, median, prefilter, resize


def step_image() -> torch.Tensor:
    """(1, 3, 32, 32): dark left half, bright right half."""
    x = torch.full((1, 3, 32, 32), 0.2)
    x[..., 16:] = 0.8
    return x


def test_median_removes_isolated_outliers():
    x = step_image()
    noisy = x.clone()
    noisy[..., 5, 5] = 1.0
    noisy[..., 20, 25] = 0.0
    torch.testing.assert_close(median(noisy), x)


def test_bilateral_smooths_small_noise_but_keeps_the_edge():
    x = step_image()
    gen = torch.Generator().manual_seed(0)
    noisy = x + 0.03 * torch.sign(torch.randn(x.shape, generator=gen))
    out = bilateral(noisy)
    assert (out - x).square().mean() < 0.5 * (noisy - x).square().mean()
    assert out[..., 15].mean() < 0.3 and out[..., 16].mean() > 0.7


@pytest.mark.parametrize("name", ["none", "median", "bilateral"])
def test_prefilter_keeps_shape_and_range(name):
    x = torch.rand(2, 3, 20, 24)
    out = prefilter(x, name)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    if name == "none":
        assert out is x


def test_resize_is_identity_at_the_same_size_and_antialiases_when_shrinking():
    x = torch.rand(1, 3, 16, 16)
    assert resize(x, (16, 16)) is x
    checker = (torch.arange(64).view(1, -1) + torch.arange(64).view(-1, 1)) % 2
    small = resize(checker.float().expand(1, 3, 64, 64), (16, 16))
    torch.testing.assert_close(small, torch.full_like(small, 0.5), atol=0.02, rtol=0)
    assert resize(x, (24, 20)).shape == (1, 3, 24, 20)
