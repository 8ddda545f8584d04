"""A tiny detector and a synthetic real/fake task for the attack and tamper tests.

"Fake" images carry a faint blended stripe pattern on a smooth 8-bit background, so a few
Adam steps give a small CNN that attacks have something to fool (index 1 = fake).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

TOY_SIZE = 24
TOY_TRAIN_STEPS = 80

ToyBatch = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def make_toy_batch(n: int, seed: int, size: int = TOY_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, size, size) on the 8-bit grid and labels (1 = stripes blended in)."""
    gen = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 3, 4, 4, generator=gen), size=(size, size), mode="bicubic")
    images = 0.5 + 0.5 * (base.clamp(0, 1) - 0.5) + 0.004 * torch.randn(n, 3, size, size, generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    strength = 0.04 + 0.12 * torch.rand(n, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    stripes = torch.sin((xx + yy).float())
    images = images + (strength * labels).view(-1, 1, 1, 1) * stripes
    return (images.clamp(0, 1) * 255).round() / 255, labels


class ToyDetector(nn.Module):
    """Two convolutions, global average pooling, two logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.head(F.relu(self.conv2(x)).mean(dim=(2, 3)))


def train_toy(seed: int) -> ToyDetector:
    """A ToyDetector trained for a few Adam steps on fresh synthetic batches."""
    torch.manual_seed(seed)
    model = ToyDetector()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(TOY_TRAIN_STEPS):
        images, labels = make_toy_batch(32, seed=seed * 10_000 + step)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Several engineers share two cores; oversubscribed OpenMP threads collapse throughput."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_model() -> ToyDetector:
    """The attacked detector."""
    return train_toy(seed=0)


@pytest.fixture(scope="session")
def substitute_model() -> ToyDetector:
    """A second detector trained on other batches and init (the black-box substitute)."""
    return train_toy(seed=1)


@pytest.fixture(scope="session")
def toy_batch() -> ToyBatch:
    """Factory: ``toy_batch(n, seed)`` -> (images, labels) held out from training."""
    return lambda n, seed=12345: make_toy_batch(n, seed=seed)
