"""Tests for the architecture registry and the built-in architectures."""

from __future__ import annotations

import pytest
import torch

from server.vision import registry
from server.vision.registry import ArchDefaults, arch_defaults, create_model, list_models, register_model

torch.set_num_threads(1)
BUILTIN = ["efficientnet_b0", "efficientnet_b4", "resnet18", "unmask_tiny", "vgg16", "xception"]


def test_lists_builtin_architectures() -> None:
    assert set(BUILTIN) <= set(list_models())


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model architecture 'nope'.*unmask_tiny"):
        create_model("nope")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_architecture_gives_two_logits(name: str) -> None:
    model = create_model(name).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2)


def test_unmask_tiny_is_small_and_takes_none_kwargs() -> None:
    model = create_model("unmask_tiny", width=None, drop_rate=None)
    params = sum(p.numel() for p in model.parameters())
    assert 200_000 <= params <= 600_000
    assert arch_defaults("unmask_tiny").input_size == (128, 128)


def test_efficientnet_b4_tf_padding_variant() -> None:
    plain, tf = create_model("efficientnet_b4"), create_model("efficientnet_b4", tf_same_padding=True)
    assert plain.state_dict().keys() == tf.state_dict().keys()
    assert tf.bn1.eps == pytest.approx(1e-3)  # TF BatchNorm epsilon, as lukemelas uses


def test_arch_defaults() -> None:
    assert arch_defaults("xception") == ArchDefaults((299, 299), (0.5,) * 3, (0.5,) * 3)
    assert arch_defaults("resnet18").mean == registry.IMAGENET_MEAN
    with pytest.raises(ValueError):
        arch_defaults("nope")


def test_register_custom_and_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_DEFAULTS", dict(registry._DEFAULTS))

    @register_model(name="linear_probe", defaults=ArchDefaults(input_size=(8, 8)))
    def linear_probe(num_classes: int = 2) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, num_classes))

    assert create_model("linear_probe")(torch.zeros(1, 3, 8, 8)).shape == (1, 2)
    assert arch_defaults("linear_probe").input_size == (8, 8)
    with pytest.raises(ValueError, match="already registered"):
        register_model(name="linear_probe")(linear_probe)
