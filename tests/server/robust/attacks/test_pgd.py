"""PGD in L∞ and L2: budgets, success, seeding."""

from __future__ import annotations

import pytest
import torch

from server.robust.attacks import FGSM, PGD


def accuracy(model, images, labels) -> float:
    """Fraction predicted correctly."""
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def test_linf_within_budget_and_range(toy_model, toy_batch):
    images, labels = toy_batch(32)
    adv = PGD(toy_model, eps=0.02, steps=5, seed=0)(images, labels)
    assert (adv - images).abs().max() <= 0.02 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_l2_within_budget_per_sample(toy_model, toy_batch):
    images, labels = toy_batch(32)
    adv = PGD(toy_model, eps=1.5, steps=5, norm="l2", seed=0)(images, labels)
    assert (adv - images).flatten(1).norm(dim=1).max() <= 1.5 + 1e-4
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize(
    ("norm", "eps"), [pytest.param("linf", 0.1, id="linf"), pytest.param("l2", 3.0, id="l2")]
)
def test_fools_the_undefended_toy_model(toy_model, toy_batch, norm, eps):
    images, labels = toy_batch(64)
    adv = PGD(toy_model, eps=eps, steps=10, norm=norm, seed=0)(images, labels)
    assert accuracy(toy_model, adv, labels) <= 0.1


def test_stronger_than_fgsm_at_the_same_budget(toy_model, toy_batch):
    images, labels = toy_batch(64)
    fgsm = FGSM(toy_model, eps=0.05)(images, labels)
    pgd = PGD(toy_model, eps=0.05, steps=10, seed=0)(images, labels)
    assert accuracy(toy_model, pgd, labels) <= accuracy(toy_model, fgsm, labels)


def test_targeted_pushes_fakes_to_real(toy_model, toy_batch):
    images, labels = toy_batch(64)
    fakes = images[labels == 1]
    real = torch.zeros(len(fakes), dtype=torch.long)
    adv = PGD(toy_model, eps=0.1, steps=10, targeted=True, seed=0)(fakes, real)
    assert accuracy(toy_model, adv, real) >= 0.9


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_same_seed_same_output(toy_model, toy_batch, norm):
    images, labels = toy_batch(8)
    first = PGD(toy_model, eps=0.05, steps=3, norm=norm, seed=7)(images, labels)
    again = PGD(toy_model, eps=0.05, steps=3, norm=norm, seed=7)(images, labels)
    other = PGD(toy_model, eps=0.05, steps=3, norm=norm, seed=8)(images, labels)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_defaults_follow_madry_step_rule(toy_model):
    attack = PGD(toy_model, steps=10)
    assert attack.eps == 0.02 and attack.alpha == pytest.approx(2.5 * 0.02 / 10)
    assert PGD(toy_model, norm="l2").eps == 1.0


def test_without_random_start_a_zero_budget_changes_nothing(toy_model, toy_batch):
    images, labels = toy_batch(4)
    assert torch.equal(PGD(toy_model, eps=0.0, random_start=False)(images, labels), images)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"norm": "l1"}, id="norm"),
        pytest.param({"steps": 0}, id="steps"),
        pytest.param({"eps": -1}, id="eps"),
    ],
)
def test_rejects_bad_arguments(toy_model, kwargs):
    with pytest.raises(ValueError):
        PGD(toy_model, **kwargs)
