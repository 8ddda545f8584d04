"""Carlini–Wagner L2: paper defaults, success, 8-bit rounding, seeding."""

from __future__ import annotations

import pytest
import torch

from server.robust.attacks import CWL2

# Small settings so a test runs in about a second; the paper's (κ = 200, 5 x 1000 steps) are
# the defaults checked separately.
FAST = {"confidence": 0.0, "c_range": (1.0, 1e3), "search_steps": 3, "max_steps": 40, "lr": 0.05}


def test_defaults_are_the_papers(toy_model):
    attack = CWL2(toy_model)
    assert attack.confidence == 200.0
    assert attack.c_range == (1e2, 1e4)
    assert (attack.search_steps, attack.max_steps, attack.lr) == (5, 1000, 1e-2)
    assert attack.init_rand and attack.round_8bit and not attack.targeted


def test_fools_the_toy_model_on_the_8bit_grid(toy_model, toy_batch):
    images, labels = toy_batch(16)
    adv = CWL2(toy_model, **FAST, seed=0)(images, labels)
    with torch.no_grad():
        fooled = toy_model(adv).argmax(dim=1) != labels
    assert fooled.float().mean() >= 0.9
    levels = adv * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert adv.min() >= 0 and adv.max() <= 1


def test_finds_small_l2_perturbations(toy_model, toy_batch):
    images, labels = toy_batch(16)
    adv = CWL2(toy_model, **FAST, seed=0)(images, labels)
    # The toy needs stripes of amplitude ~0.05 (L2 ~ 2 over 24x24x3) to change its mind.
    assert (adv - images).flatten(1).norm(dim=1).max() < 4.0


def test_same_seed_same_output(toy_model, toy_batch):
    images, labels = toy_batch(4)
    first = CWL2(toy_model, **FAST, seed=3)(images, labels)
    assert torch.equal(first, CWL2(toy_model, **FAST, seed=3)(images, labels))


def test_unfooled_samples_come_back_unchanged(toy_model, toy_batch):
    images, labels = toy_batch(4)
    weak = {**FAST, "c_range": (1e-6, 1e-5), "search_steps": 1, "max_steps": 2}
    assert torch.equal(CWL2(toy_model, **weak, seed=0)(images, labels), images)


def test_targeted_reaches_real(toy_model, toy_batch):
    images, labels = toy_batch(32)
    fakes = images[labels == 1][:8]
    real = torch.zeros(len(fakes), dtype=torch.long)
    adv = CWL2(toy_model, **FAST, targeted=True, seed=0)(fakes, real)
    with torch.no_grad():
        assert (toy_model(adv).argmax(dim=1) == 0).float().mean() >= 0.9


def test_rounding_can_be_switched_off(toy_model, toy_batch):
    images, labels = toy_batch(4)
    adv = CWL2(toy_model, **FAST, round_8bit=False, seed=0)(images, labels)
    levels = adv * 255
    assert not torch.allclose(levels, levels.round(), atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"c_range": (10.0, 1.0)}, id="c-range-order"),
        pytest.param({"c_range": (0.0, 1.0)}, id="c-range-zero"),
        pytest.param({"search_steps": 0}, id="search-steps"),
        pytest.param({"max_steps": 0}, id="max-steps"),
    ],
)
def test_rejects_bad_arguments(toy_model, kwargs):
    with pytest.raises(ValueError):
        CWL2(toy_model, **kwargs)
