"""Black-box transfer: craft on a substitute model, use against the target."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from server.robust.attacks.base import Attack, check_images, check_labels, model_device


@dataclass(frozen=True)
class TransferReport:
    """Accuracies (fractions in [0, 1]) measured by ``Transfer.evaluate``."""

    target_clean: float
    target_adversarial: float
    substitute_adversarial: float
    samples: int


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` that ``model`` (in eval mode) labels correctly."""
    device = model_device(model)
    images = images if device is None else images.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred = model(images).argmax(dim=1)
    finally:
        model.train(was_training)
    return float((pred == labels.to(pred.device)).float().mean()) if len(labels) else float("nan")


class Transfer(Attack):
    """Black-box transfer attack (Papernot et al., arXiv:1602.02697; the paper's "blackbox").

    The attacker has no access to the target detector's weights or gradients: it runs
    ``source_attack`` on its own substitute model (any attack here: FGSM, PGD, CW-L2, EOT) and
    hands the result to the target unchanged. Gandhi & Jain crafted on one trained detector
    and evaluated on another (their code: ``vgg_reg1000`` → ``vgg_blur``). ``model`` is the
    target; ``forward`` never queries it, ``evaluate`` does to report how well the
    perturbations transfer.

    Distance: that of ``source_attack``.

    Arguments:
        model: the target detector (used only by ``evaluate``).
        source_attack: an ``Attack`` built on the substitute model, with its own budget/seed.

    Shape:
        images (B, 3, H, W) float in [0, 1]; labels (B,) long; output like images.

    Example:
        >>> attack = Transfer(target, FGSM(substitute, eps=0.02))
        >>> adv = attack(images, labels)
        >>> attack.evaluate(images, labels).target_adversarial
    """

    def __init__(self, model: nn.Module, source_attack: Attack) -> None:
        super().__init__(model, targeted=source_attack.targeted, seed=source_attack.seed)
        self.source_attack = source_attack

    @property
    def substitute(self) -> nn.Module:
        """The model the perturbations are crafted on."""
        return self.source_attack.model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Run the source attack on the substitute; the target is never queried."""
        return self.source_attack(images, labels)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> TransferReport:
        """Craft on the substitute and measure true-label accuracy of both models.

        ``labels`` are the true labels even for a targeted source attack; the attack is then
        given class ``1 - label`` (two classes: real ↔ fake).
        """
        check_images(images)
        check_labels(labels, images.shape[0])
        attack_labels = 1 - labels if self.targeted else labels
        adv = self(images, attack_labels)
        return TransferReport(
            target_clean=_accuracy(self.model, images, labels),
            target_adversarial=_accuracy(self.model, adv, labels),
            substitute_adversarial=_accuracy(self.substitute, adv, labels),
            samples=int(images.shape[0]),
        )

    def __repr__(self) -> str:
        return f"Transfer(source_attack={self.source_attack!r})"
