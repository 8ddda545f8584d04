"""The Deep Image Prior "skip" network, written once for G independent networks as grouped convolutions.

Ulyanov et al., "Deep Image Prior" (CVPR 2018), ``models/skip.py`` of the DIP repository. Channels of
group ``g`` are the contiguous block ``[g*C, (g+1)*C)`` everywhere (input noise, every convolution,
the output), so one launch trains G networks that share nothing: grouped convolutions never mix
groups, BatchNorm is per channel (hence per group, and with batch 1 it normalises over H×W of one
image only), padding, activation and upsampling are per channel, and Adam is per element.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# LeakyReLU slope of the DIP repository (``act('LeakyReLU')`` → ``nn.LeakyReLU(0.2)``).
LEAKY_SLOPE = 0.2


def _conv(cin: int, cout: int, kernel: int, groups: int, *, stride: int = 1, bias: bool = False) -> nn.Module:
    """Reflection-padded grouped convolution; ``cin``/``cout`` are per network."""
    conv = nn.Conv2d(cin * groups, cout * groups, kernel, stride=stride, groups=groups, bias=bias)
    pad = (kernel - 1) // 2
    return nn.Sequential(nn.ReflectionPad2d(pad), conv) if pad else conv


def _bn(channels: int, groups: int) -> nn.BatchNorm2d:
    # Always batch statistics, as the DIP loop keeps the net in train mode; no running buffers to carry.
    return nn.BatchNorm2d(channels * groups, track_running_stats=False)


def _block(cin: int, cout: int, kernel: int, groups: int, *, stride: int = 1) -> list[nn.Module]:
    # Convolutions followed by BatchNorm have no bias: BN subtracts it again, and Adam would turn its
    # float-noise gradient into ±lr steps that make grouped and single runs drift apart.
    return [_conv(cin, cout, kernel, groups, stride=stride), _bn(cout, groups), nn.LeakyReLU(LEAKY_SLOPE)]


def group_cat(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """Concatenate two (N, G*Ca, H, W) and (N, G*Cb, H, W) tensors per group into (N, G*(Ca+Cb), H, W)."""
    n, _, h, w = a.shape
    out = torch.cat([a.view(n, groups, -1, h, w), b.view(n, groups, -1, h, w)], dim=2)
    return out.view(n, -1, h, w)


class _Level(nn.Module):
    """One scale: down branch, optional 1x1 skip branch, the deeper levels, then the up branch."""

    def __init__(self, cin: int, down: int, skip: int, up: int, deeper_up: int | None, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.skip = nn.Sequential(*_block(cin, skip, 1, groups)) if skip else None
        self.down = nn.Sequential(*_block(cin, down, 3, groups, stride=2), *_block(down, down, 3, groups))
        self.deeper: _Level | None = None
        k = down if deeper_up is None else deeper_up
        self.bn_in = _bn(skip + k, groups)
        self.up = nn.Sequential(*_block(skip + k, up, 3, groups), *_block(up, up, 1, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.skip is not None:
            y = group_cat(self.skip(x), y, self.groups)
        return self.up(self.bn_in(y))


class SkipNet(nn.Module):
    """G independent DIP skip networks: (1, G*input_channels, S, S) noise → (1, G*3, S, S) in (0, 1).

    Arguments:
        channels: down = up channels per level (paper JPEG config: (8, 16, 32, 64, 128)).
        skip: skip channels per level (paper: (0, 0, 0, 4, 4)).
        input_channels: channels of the input noise per network (paper: 32).
        groups: how many networks are packed (G).

    Shape:
        input (N, G*input_channels, S, S) with S divisible by 2**len(channels); output (N, G*3, S, S).
    """

    def __init__(
        self, channels: Sequence[int], skip: Sequence[int], input_channels: int = 32, groups: int = 1
    ) -> None:
        super().__init__()
        if len(channels) != len(skip) or not channels:
            raise ValueError(f"channels and skip need one entry per level, got {channels} and {skip}")
        self.groups = groups
        self.input_channels = input_channels
        levels: list[_Level] = []
        cin = input_channels
        for i, (down, sk) in enumerate(zip(channels, skip, strict=True)):
            deeper_up = channels[i + 1] if i + 1 < len(channels) else None
            levels.append(_Level(cin, down, sk, down, deeper_up, groups))
            cin = down
        for outer, inner in itertools.pairwise(levels):
            outer.deeper = inner
        self.body = levels[0]
        self.head = nn.Conv2d(channels[0] * groups, 3 * groups, 1, groups=groups)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.body(z)))


def stack_params(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-network parameters (one dict per network) → the parameters of the grouped network."""
    return {name: torch.cat([s[name] for s in states], dim=0) for name in states[0]}


def stacked_to_grouped(stacked: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters stacked per network (G, *shape) → grouped parameters (G*shape[0], *shape[1:])."""
    return {name: t.reshape(-1, *t.shape[2:]) for name, t in stacked.items()}


def grouped_to_stacked(params: dict[str, torch.Tensor], groups: int) -> dict[str, torch.Tensor]:
    """Grouped parameters → stacked per network (G, *shape); views, no copy."""
    return {name: t.view(groups, -1, *t.shape[1:]) for name, t in params.items()}


def init_params(
    channels: Sequence[int], skip: Sequence[int], input_channels: int, seed: int
) -> dict[str, torch.Tensor]:
    """PyTorch's default initialisation of one network from ``seed``, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SkipNet(channels, skip, input_channels, groups=1)
    return {name: p.detach() for name, p in net.named_parameters()}
