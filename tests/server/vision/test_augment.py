"""Tests for the social-media augmentations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from server.vision import augment as aug


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[60:188, 170:298])


def test_jpeg_quality_controls_error(crop: np.ndarray) -> None:
    err = {q: np.abs(aug.jpeg(crop, q).astype(int) - crop).mean() for q in (30, 95)}
    assert err[30] > err[95] > 0


def test_resize_down_up_keeps_shape_and_loses_detail(crop: np.ndarray) -> None:
    out = aug.resize_down_up(crop, 0.4)
    assert out.shape == crop.shape
    assert np.abs(np.diff(out.astype(int), axis=1)).mean() < np.abs(np.diff(crop.astype(int), axis=1)).mean()


def test_blur_and_noise(crop: np.ndarray) -> None:
    assert aug.gaussian_blur(crop, 1.0).std() < crop.std()
    noisy = aug.gaussian_noise(crop, 5.0, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and 2.0 < np.abs(noisy.astype(int) - crop).mean() < 6.0


def test_augment_is_seeded_and_keeps_contract(crop: np.ndarray) -> None:
    a = aug.augment(crop, np.random.default_rng(5))
    b = aug.augment(crop, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == crop.shape and a.dtype == np.uint8


def test_augment_all_on_changes_image(crop: np.ndarray) -> None:
    cfg = aug.AugmentConfig(p_flip=1, p_jpeg=1, p_resize=1, p_blur=1, p_noise=1, p_color=1)
    assert not np.array_equal(aug.augment(crop, np.random.default_rng(0), cfg), crop)


def test_augment_all_off_is_identity(crop: np.ndarray) -> None:
    cfg = aug.AugmentConfig(p_flip=0, p_jpeg=0, p_resize=0, p_blur=0, p_noise=0, p_color=0)
    assert np.array_equal(aug.augment(crop, np.random.default_rng(0), cfg), crop)
