"""Expectation-over-Transformation PGD: transforms, budget, robustness, seeding."""

from __future__ import annotations

import pytest
import torch

from server.robust.attacks import EOTPGD, PGD, hussain_transforms
from server.robust.attacks.eot import Transform, gaussian_blur, jpeg_bpda, resize_down_up, translate

BLUR = Transform("blur", lambda x, g: gaussian_blur(x, 3, 0.8))
RESIZE = Transform("resize", lambda x, g: resize_down_up(x, 0.7))
SMALL_SET = [
    Transform("identity", lambda x, g: x),
    BLUR,
    RESIZE,
    Transform("jpeg", lambda x, g: jpeg_bpda(x, 75)),
]


def accuracy(model, images, labels) -> float:
    """Fraction predicted correctly."""
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def test_hussain_set_has_the_papers_transforms():
    names = [t.name for t in hussain_transforms()]
    assert names[0] == "identity" and "noise" in names
    assert sum(n.startswith("blur") for n in names) == 4
    assert sum(n.startswith("shift") for n in names) == 8
    assert sum(n.startswith("resize") for n in names) == 3
    assert sum(n.startswith("jpeg") for n in names) == 2


def test_transforms_keep_shape_and_pass_gradients():
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    for transform in hussain_transforms():
        out = transform(x, gen)
        assert out.shape == x.shape, transform.name
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0, transform.name


def test_jpeg_bpda_is_real_jpeg_forward_and_identity_backward():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    out = jpeg_bpda(x, 50)
    assert not torch.allclose(out, x, atol=1e-3)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))


def test_translate_shifts_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    out = translate(x, 1, 2)
    assert torch.equal(out[0, 0, 2:, 1:], x[0, 0, :2, :3])
    assert out[0, 0, :2].abs().sum() == 0 and out[0, 0, :, 0].abs().sum() == 0


def test_resize_down_up_keeps_constant_images():
    x = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(resize_down_up(x, 0.2), x)


def test_within_budget_and_range(toy_model, toy_batch):
    images, labels = toy_batch(16)
    adv = EOTPGD(toy_model, eps=0.02, alpha=0.005, steps=5, transforms=SMALL_SET, seed=0)(images, labels)
    assert (adv - images).abs().max() <= 0.02 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_survives_the_transforms_better_than_plain_pgd(toy_model, toy_batch):
    images, labels = toy_batch(32)
    eot = EOTPGD(toy_model, eps=0.1, alpha=0.01, steps=20, transforms=SMALL_SET, seed=0)(images, labels)
    pgd = PGD(toy_model, eps=0.1, alpha=0.01, steps=20, random_start=False)(images, labels)
    for transform in (BLUR, RESIZE):
        eot_acc = accuracy(toy_model, transform(eot), labels)
        assert eot_acc <= 0.1, transform.name
        assert eot_acc <= accuracy(toy_model, transform(pgd), labels), transform.name


def test_stops_samples_that_fool_every_transform(toy_model, toy_batch):
    images, labels = toy_batch(16)
    easy = EOTPGD(
        toy_model, eps=0.1, alpha=0.01, steps=40, transforms=SMALL_SET[:1], desired_prob=0.6, seed=0
    )
    never = EOTPGD(
        toy_model, eps=0.1, alpha=0.01, steps=40, transforms=SMALL_SET[:1], desired_prob=None, seed=0
    )
    early, full = easy(images, labels), never(images, labels)
    assert (early - images).abs().mean() < (full - images).abs().mean()


def test_same_seed_same_output_with_noise_and_sampling(toy_model, toy_batch):
    images, labels = toy_batch(4)
    make = lambda seed: EOTPGD(toy_model, eps=0.05, steps=3, samples=4, seed=seed)  # noqa: E731
    assert torch.equal(make(1)(images, labels), make(1)(images, labels))
    assert not torch.equal(make(1)(images, labels), make(2)(images, labels))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"transforms": []}, id="no-transforms"),
        pytest.param({"samples": 0}, id="samples"),
        pytest.param({"alpha": 0.0}, id="alpha"),
        pytest.param({"steps": 0}, id="steps"),
    ],
)
def test_rejects_bad_arguments(toy_model, kwargs):
    with pytest.raises(ValueError):
        EOTPGD(toy_model, **kwargs)
