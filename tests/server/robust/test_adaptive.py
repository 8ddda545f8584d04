"""Adaptive attacks on the tamper check: the differentiable copy of its score, and the attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.robust.adaptive import TamperAwarePGD, TamperScore, squeezer_transforms
from server.robust.attacks import FGSM, PGD
from server.robust.tamper import CheckConfig, TamperScorer


@pytest.fixture(scope="module")
def scorer(toy_model, toy_batch) -> TamperScorer:
    images, labels = toy_batch(64, seed=1)
    attacked = FGSM(toy_model, 0.03)(images, labels)
    return TamperScorer(CheckConfig(squeezers=("jpeg", "median"))).fit_frames(toy_model, images, attacked)


def test_the_torch_copy_gives_the_scorers_own_scores(scorer, toy_model, toy_batch) -> None:
    images, _ = toy_batch(16, seed=2)
    with torch.no_grad():
        logits, tamper = TamperScore(scorer, toy_model)(images)
    expected = scorer.score(toy_model, images)
    np.testing.assert_allclose(torch.sigmoid(tamper).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(logits.numpy(), toy_model(images).detach().numpy(), atol=1e-5)


def test_its_gradient_reaches_every_pixel_group(scorer, toy_model, toy_batch) -> None:
    images, _ = toy_batch(4, seed=3)
    x = images.clone().requires_grad_(True)
    _, tamper = TamperScore(scorer, toy_model)(x)
    (grad,) = torch.autograd.grad(tamper.sum(), x)
    assert torch.isfinite(grad).all() and (grad.abs().flatten(1).sum(dim=1) > 0).all()


def test_tamper_aware_pgd_stays_in_budget_and_is_seeded(scorer, toy_model, toy_batch) -> None:
    images, _ = toy_batch(8, seed=4)
    goal = torch.zeros(8, dtype=torch.long)
    a = TamperAwarePGD(toy_model, scorer, eps=0.03, steps=5, seed=0)(images, goal)
    b = TamperAwarePGD(toy_model, scorer, eps=0.03, steps=5, seed=0)(images, goal)
    assert torch.equal(a, b)
    assert (a - images).abs().max() <= 0.03 + 1e-6 and a.min() >= 0 and a.max() <= 1


def test_knowing_the_check_evades_it_more_often_than_plain_pgd(scorer, toy_model, toy_batch) -> None:
    images, labels = toy_batch(48, seed=5)
    fakes = images[labels == 1]
    goal = torch.zeros(len(fakes), dtype=torch.long)

    def evaded(adv: torch.Tensor) -> float:
        fooled = toy_model(adv).argmax(dim=1) == 0
        flagged = torch.from_numpy(scorer.suspicious(scorer.score(toy_model, adv)))
        return float((fooled & ~flagged).float().mean())

    plain = PGD(toy_model, 0.05, steps=30, targeted=True, seed=0)(fakes, goal)
    aware = TamperAwarePGD(toy_model, scorer, eps=0.05, steps=30, seed=0)(fakes, goal)
    assert evaded(aware) > evaded(plain)


def test_squeezer_transforms_mirror_the_check_config() -> None:
    names = [
        t.name
        for t in squeezer_transforms(CheckConfig(squeezers=("bits", "median", "jpeg"), consistency_k=2))
    ]
    assert names == ["identity", "bits5", "median3", "jpeg75", "resize_pad0", "resize_pad1"]
