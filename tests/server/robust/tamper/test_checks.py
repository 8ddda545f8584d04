"""Tamper features: shapes, determinism, modes, and that attacks move them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from server.robust.attacks import FGSM
from server.robust.tamper.checks import CheckConfig, resize_pad, tamper_features, tamper_features_and_logits


class CountingModel(nn.Module):
    """Wraps a model and records the batch size of each forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.inner(x)


def column(features: np.ndarray, config: CheckConfig, name: str) -> np.ndarray:
    """One named feature column."""
    return features[:, config.feature_names().index(name)]


def test_default_columns_and_shape(toy_model, toy_batch):
    images, _ = toy_batch(6)
    config = CheckConfig()
    features = tamper_features(toy_model, images, config)
    assert config.feature_names() == (
        "squeeze_jpeg",
        "consistency",
        "residual_energy",
        "residual_mad",
        "residual_kurtosis",
        "jpeg_residual",
    )
    assert features.shape == (6, 6) and features.dtype == np.float64
    assert np.isfinite(features).all()


def test_full_config_adds_bits_and_gradient_columns(toy_model, toy_batch):
    images, _ = toy_batch(3)
    config = CheckConfig(squeezers=("bits", "median", "jpeg"), consistency_k=3, gradient=True)
    features = tamper_features(toy_model, images, config)
    assert features.shape == (3, len(config.feature_names())) == (3, 10)
    assert np.isfinite(features).all()


def test_variants_go_through_the_model_in_one_batch(toy_model, toy_batch):
    images, _ = toy_batch(4)
    counting = CountingModel(toy_model)
    tamper_features(counting, images, CheckConfig())
    assert counting.batches == [4 * (1 + 2)]
    counting.batches.clear()
    with torch.no_grad():
        logits = toy_model(images)
    tamper_features(counting, images, CheckConfig(), logits=logits)
    assert counting.batches == [4 * 2]


def test_residual_only_config_never_calls_the_model(toy_model, toy_batch):
    images, _ = toy_batch(4)
    counting = CountingModel(toy_model)
    config = CheckConfig(squeezers=(), consistency_k=0)
    features = tamper_features(counting, images, config)
    assert counting.batches == []
    assert features.shape == (4, 4) and config.feature_names()[0] == "residual_energy"


def test_same_input_same_features(toy_model, toy_batch):
    images, _ = toy_batch(4)
    config = CheckConfig(gradient=True, consistency_k=2)
    np.testing.assert_array_equal(
        tamper_features(toy_model, images, config), tamper_features(toy_model, images, config)
    )


def test_passing_logits_gives_the_same_features(toy_model, toy_batch):
    images, _ = toy_batch(4)
    with torch.no_grad():
        logits = toy_model(images)
    np.testing.assert_allclose(
        tamper_features(toy_model, images, logits=logits), tamper_features(toy_model, images), atol=1e-6
    )


def test_forward_replaces_the_no_grad_model_call_and_returns_the_logits(toy_model, toy_batch):
    images, _ = toy_batch(4)
    model, forward = CountingModel(toy_model), CountingModel(toy_model)
    features, logits = tamper_features_and_logits(model, images, CheckConfig(), forward=forward)
    # One forward of the crops and their two checked copies, through ``forward`` only.
    assert (model.batches, forward.batches) == ([], [4 * 3])
    with torch.no_grad():
        np.testing.assert_allclose(logits.numpy(), toy_model(images).numpy(), atol=1e-6)
    np.testing.assert_allclose(features, tamper_features(toy_model, images), atol=1e-6)
    # The gradient check needs autograd: it stays on the model; the copies still use forward.
    model.batches.clear(), forward.batches.clear()
    tamper_features_and_logits(model, images, CheckConfig(gradient=True), forward=forward)
    assert model.batches and forward.batches == [4 * 2]


def test_logits_without_model_variants_come_from_one_forward(toy_model, toy_batch):
    images, _ = toy_batch(3)
    forward = CountingModel(toy_model)
    config = CheckConfig(squeezers=(), consistency_k=0)
    features, logits = tamper_features_and_logits(toy_model, images, config, forward=forward)
    assert forward.batches == [3] and logits.shape == (3, 2) and features.shape == (3, 4)


def test_works_under_inference_mode_and_restores_train_mode(toy_model, toy_batch):
    images, _ = toy_batch(2)
    toy_model.train()
    try:
        with torch.inference_mode():
            frozen = images.clone()  # an inference tensor, as the request path would hand over
            features = tamper_features(toy_model, frozen, CheckConfig(gradient=True))
        assert toy_model.training
    finally:
        toy_model.eval()
    assert np.isfinite(features).all()
    assert all(p.grad is None for p in toy_model.parameters())


def test_fgsm_raises_squeeze_and_residual_features(toy_model, toy_batch):
    images, labels = toy_batch(32)
    adv = FGSM(toy_model, eps=0.02)(images, labels)
    config = CheckConfig()
    clean, attacked = tamper_features(toy_model, images, config), tamper_features(toy_model, adv, config)
    for name in ("squeeze_jpeg", "consistency", "residual_mad", "jpeg_residual"):
        assert np.median(column(attacked, config, name)) > np.median(column(clean, config, name)), name
    assert np.median(column(attacked, config, "residual_kurtosis")) < np.median(
        column(clean, config, "residual_kurtosis")
    )


def test_resize_pad_keeps_shape_and_constant_images():
    x = torch.full((2, 3, 20, 30), 0.25)
    out = resize_pad(x, 0.9, 0.3, 0.7)
    assert out.shape == x.shape
    assert torch.allclose(out, x)


def test_config_round_trips_through_a_dict():
    config = CheckConfig(squeezers=("bits", "jpeg"), consistency_k=3, gradient=True, seed=4)
    assert CheckConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"squeezers": ("blur",)}, id="unknown-squeezer"),
        pytest.param({"squeezers": ("jpeg", "jpeg")}, id="duplicate-squeezer"),
        pytest.param({"consistency_k": -1}, id="negative-k"),
        pytest.param({"scale_range": (0.9, 1.2)}, id="scale-above-one"),
    ],
)
def test_rejects_bad_config(kwargs):
    with pytest.raises(ValueError):
        CheckConfig(**kwargs)


def test_rejects_bad_inputs(toy_model):
    with pytest.raises(ValueError):
        tamper_features(toy_model, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError):
        tamper_features(toy_model, torch.rand(2, 3, 8, 8), logits=torch.zeros(3, 2))
