"""FGSM: budget, range, success on the toy detector, contracts."""

from __future__ import annotations

import pytest
import torch

from server.robust.attacks import FGSM, PAPER_EPS


def accuracy(model, images, labels) -> float:
    """Fraction predicted correctly."""
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def test_default_eps_is_the_papers(toy_model):
    assert FGSM(toy_model).eps == PAPER_EPS == 0.02


def test_perturbation_within_linf_budget_and_range(toy_model, toy_batch):
    images, labels = toy_batch(32)
    adv = FGSM(toy_model, eps=0.02)(images, labels)
    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert (adv - images).abs().max() <= 0.02 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_fools_the_undefended_toy_model(toy_model, toy_batch):
    images, labels = toy_batch(64)
    adv = FGSM(toy_model, eps=0.05)(images, labels)
    assert accuracy(toy_model, images, labels) >= 0.9
    assert accuracy(toy_model, adv, labels) <= 0.5


def test_targeted_pushes_fakes_to_real(toy_model, toy_batch):
    images, labels = toy_batch(64)
    fakes = images[labels == 1]
    real = torch.zeros(len(fakes), dtype=torch.long)
    adv = FGSM(toy_model, eps=0.05, targeted=True)(fakes, real)
    assert accuracy(toy_model, adv, real) > accuracy(toy_model, fakes, real) + 0.4


def test_is_deterministic(toy_model, toy_batch):
    images, labels = toy_batch(8)
    assert torch.equal(FGSM(toy_model)(images, labels), FGSM(toy_model)(images, labels))


def test_restores_train_mode_and_leaves_weights_without_grad(toy_model, toy_batch):
    images, labels = toy_batch(4)
    toy_model.train()
    try:
        FGSM(toy_model)(images, labels)
        assert toy_model.training
    finally:
        toy_model.eval()
    assert all(p.grad is None for p in toy_model.parameters())


@pytest.mark.parametrize(
    ("images", "labels"),
    [
        pytest.param(torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), id="one-channel"),
        pytest.param(torch.rand(3, 8, 8), torch.zeros(1, dtype=torch.long), id="no-batch-dim"),
        pytest.param(
            torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8),
            torch.zeros(2, dtype=torch.long),
            id="uint8",
        ),
        pytest.param(torch.rand(2, 3, 8, 8) * 255, torch.zeros(2, dtype=torch.long), id="0-255-range"),
        pytest.param(torch.rand(2, 3, 8, 8), torch.zeros(3, dtype=torch.long), id="label-count"),
        pytest.param(torch.rand(2, 3, 8, 8), torch.zeros(2), id="float-labels"),
    ],
)
def test_rejects_broken_contracts(toy_model, images, labels):
    with pytest.raises(ValueError):
        FGSM(toy_model)(images, labels)


def test_rejects_negative_eps(toy_model):
    with pytest.raises(ValueError):
        FGSM(toy_model, eps=-0.1)


def test_works_inside_inference_mode(toy_model, toy_batch):
    images, labels = toy_batch(4)
    expected = FGSM(toy_model)(images, labels)
    with torch.inference_mode():
        frozen, frozen_labels = images.clone(), labels.clone()
        adv = FGSM(toy_model)(frozen, frozen_labels)
    assert torch.equal(adv, expected)
