"""Tests for self-blended pseudo-fakes."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from server.vision.sbi import (
    SBIParams,
    apply_sbi,
    crop_face_box,
    lerp_params,
    sample_sbi_params,
    sbi_mask,
    self_blend,
    source_copy,
)

BOX = (177, 66, 95, 95)  # astronaut()'s face


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_self_blend_changes_only_the_face_region(astronaut: np.ndarray) -> None:
    out, mask = self_blend(astronaut, BOX, np.random.default_rng(0))
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - astronaut.astype(int)).sum(axis=2)
    assert diff[mask == 0].max() == 0  # untouched outside the mask
    x, y, w, h = BOX
    assert diff[y : y + h, x : x + w].mean() > 1.0  # the face itself changed
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[y + h // 2, x + w // 2] > 0.4  # the face centre is blended


def test_self_blend_is_seeded(astronaut: np.ndarray) -> None:
    a, _ = self_blend(astronaut, BOX, np.random.default_rng(3))
    b, _ = self_blend(astronaut, BOX, np.random.default_rng(3))
    c, _ = self_blend(astronaut, BOX, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_identity_params_change_nothing(astronaut: np.ndarray) -> None:
    out, _ = apply_sbi(astronaut, BOX, SBIParams())
    assert np.abs(out.astype(int) - astronaut.astype(int)).max() <= 1


def test_mask_feather_and_blend() -> None:
    p = SBIParams(feather=0.1, blend=0.5)
    m = sbi_mask((200, 200), (50, 50, 100, 100), p)
    assert m.max() == pytest.approx(0.5, abs=1e-3)
    # A soft edge: values strictly between 0 and the peak exist.
    assert ((m > 0.05) & (m < 0.45)).sum() > 100


def test_landmark_hull_mask() -> None:
    pts = np.array([[60, 60], [140, 60], [150, 120], [100, 160], [50, 120]], np.float32)
    m = sbi_mask((200, 200), (50, 60, 100, 100), SBIParams(feather=0.01), landmarks=pts)
    assert m[110, 100] > 0.9 and m[10, 10] == 0.0 and m[190, 190] == 0.0


def test_source_copy_colour_shift() -> None:
    img = np.full((64, 64, 3), 100, np.uint8)
    out = source_copy(img, (16, 16, 32, 32), SBIParams(rgb_shift=(0.1, 0.0, -0.1)))
    assert out[32, 32].tolist() == pytest.approx([125.5, 100.0, 74.5])


def test_lerp_params_endpoints() -> None:
    rng = np.random.default_rng(1)
    a, b = sample_sbi_params(rng), sample_sbi_params(rng)
    assert lerp_params(a, b, 0.0) == a
    mid = lerp_params(a, b, 0.5)
    assert mid.scale == pytest.approx((a.scale + b.scale) / 2)


def test_crop_face_box_matches_crop_face() -> None:
    assert crop_face_box((130, 130), 0.3) == (15, 15, 100, 100)


def test_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        apply_sbi(np.zeros((10, 10, 3), np.float32), (2, 2, 5, 5), SBIParams())
