"""Squeezers: bit depth, median filter, JPEG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from server.robust.tamper.squeeze import bit_depth, jpeg, median_filter


def test_bit_depth_leaves_only_the_allowed_levels():
    out = bit_depth(torch.rand(2, 3, 16, 16), bits=3)
    assert torch.unique(out).numel() <= 8
    assert torch.allclose(out * 7, (out * 7).round())


def test_bit_depth_8_keeps_8bit_images():
    x = torch.randint(0, 256, (1, 3, 8, 8)).float() / 255
    assert torch.allclose(bit_depth(x, 8), x)


@pytest.mark.parametrize("size", [2, 3, 5])
@pytest.mark.parametrize("device_path", ["cv2", "torch"])
def test_median_matches_scipy_with_edge_replicate(size, device_path):
    x = torch.rand(2, 3, 11, 13)
    # float64 takes the pure-torch path, float32 on CPU takes OpenCV's where it can.
    dtype = torch.float32 if device_path == "cv2" else torch.float64
    out = median_filter(x.to(dtype), size).float().numpy()
    ref = ndimage.median_filter(x.numpy(), size=(1, 1, size, size), mode="nearest")
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_median_removes_isolated_spikes():
    x = torch.full((1, 3, 9, 9), 0.5)
    x[..., 4, 4] = 1.0
    assert torch.allclose(median_filter(x, 3), torch.full_like(x, 0.5))


def test_jpeg_round_trip_is_close_on_smooth_images_and_8bit():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32).contiguous()
    out = jpeg(ramp, 90)
    assert out.shape == ramp.shape and out.dtype == ramp.dtype
    assert (out - ramp).abs().mean() < 0.01
    assert torch.allclose(out * 255, (out * 255).round())


def test_jpeg_removes_high_frequency_noise():
    smooth = torch.full((1, 3, 32, 32), 0.5)
    noisy = smooth + 0.03 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert (jpeg(noisy, 50) - smooth).abs().mean() < (noisy - smooth).abs().mean()


@pytest.mark.parametrize(
    ("fn", "arg"),
    [
        pytest.param(bit_depth, 0, id="bits-0"),
        pytest.param(bit_depth, 9, id="bits-9"),
        pytest.param(median_filter, 1, id="median-1"),
        pytest.param(jpeg, 0, id="jpeg-0"),
        pytest.param(jpeg, 101, id="jpeg-101"),
    ],
)
def test_rejects_bad_settings(fn, arg):
    with pytest.raises(ValueError):
        fn(torch.rand(1, 3, 8, 8), arg)
