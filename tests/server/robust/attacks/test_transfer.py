"""Black-box transfer: crafted on a substitute, never querying the target."""

from __future__ import annotations

import torch
from torch import nn

from server.robust.attacks import FGSM, PGD, Transfer


class CountingModel(nn.Module):
    """Wraps a model and counts forward calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_crafting_never_queries_the_target(toy_model, substitute_model, toy_batch):
    images, labels = toy_batch(8)
    target = CountingModel(toy_model)
    adv = Transfer(target, FGSM(substitute_model, eps=0.02))(images, labels)
    assert target.calls == 0
    assert torch.equal(adv, FGSM(substitute_model, eps=0.02)(images, labels))


def test_perturbations_transfer_to_the_target(toy_model, substitute_model, toy_batch):
    images, labels = toy_batch(64)
    report = Transfer(toy_model, PGD(substitute_model, eps=0.1, steps=10, seed=0)).evaluate(images, labels)
    assert report.samples == 64
    assert report.target_clean >= 0.9
    assert report.substitute_adversarial <= 0.1
    assert report.target_adversarial <= report.target_clean - 0.5


def test_targeted_evaluation_uses_true_labels(toy_model, substitute_model, toy_batch):
    images, labels = toy_batch(64)
    fakes = images[labels == 1]
    ones = torch.ones(len(fakes), dtype=torch.long)
    attack = Transfer(toy_model, PGD(substitute_model, eps=0.1, steps=10, targeted=True, seed=0))
    report = attack.evaluate(fakes, ones)
    assert report.target_adversarial < report.target_clean


def test_inherits_the_source_attacks_seed_and_mode(toy_model, substitute_model):
    source = PGD(substitute_model, targeted=True, seed=5)
    attack = Transfer(toy_model, source)
    assert attack.seed == 5 and attack.targeted and attack.substitute is substitute_model
