"""Minimal re-implementations of the upstream detectors' layouts, for importer tests only.

Written from reading the upstream code (not copied): DeepfakeBench ``training/networks/xception.py``
and ``efficientnetb4.py`` with their ``*_detector.py`` wrappers, SBI ``src/inference/model.py``,
and lukemelas ``efficientnet_pytorch/model.py`` + ``utils.py`` (static "same" padding computed for
a fixed image size). Only parameter names, shapes and the eval-mode forward have to match.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --- DeepfakeBench Xception (FaceForensics++ variant of Cadene's Xception) --------------------


class SepConv(nn.Module):
    """Depthwise ``conv1`` then 1x1 ``pointwise``, both without bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class XceptionBlock(nn.Module):
    """``rep`` = [relu, sepconv, bn] * reps (+ maxpool); a 1x1 ``skip``/``skipbn`` if the shape changes."""

    def __init__(
        self, cin: int, cout: int, reps: int, stride: int, start_relu: bool, grow_first: bool
    ) -> None:
        super().__init__()
        self.skip = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if cin != cout or stride != 1 else None
        if self.skip is not None:
            self.skipbn = nn.BatchNorm2d(cout)
        widths = (
            [(cin, cout)] + [(cout, cout)] * (reps - 1)
            if grow_first
            else [(cin, cin)] * (reps - 1) + [(cin, cout)]
        )
        layers: list[nn.Module] = []
        for a, b in widths:
            layers += [nn.ReLU(), SepConv(a, b), nn.BatchNorm2d(b)]
        layers = layers if start_relu else layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skipbn(self.skip(x)) if self.skip is not None else x
        return self.rep(x) + skip


class DfbXception(nn.Module):
    """DeepfakeBench's Xception backbone in mode "original" (``adjust_channel`` exists but is unused)."""

    def __init__(self, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        plan = [(64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True), (256, 728, 2, 2, True, True)]
        plan += [(728, 728, 3, 1, True, True)] * 8 + [(728, 1024, 2, 2, True, False)]
        for i, args in enumerate(plan, start=1):
            setattr(self, f"block{i}", XceptionBlock(*args))
        self.conv3 = SepConv(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SepConv(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)
        linear = nn.Linear(2048, num_classes)
        self.last_linear = nn.Sequential(nn.Dropout(dropout), linear) if dropout else linear
        self.adjust_channel = nn.Sequential(nn.Conv2d(2048, 512, 1, 1), nn.BatchNorm2d(512), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for i in range(1, 13):
            x = getattr(self, f"block{i}")(x)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))  # the classifier's relu
        return self.last_linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DfbDetector(nn.Module):
    """DeepfakeBench detectors keep the network as ``backbone`` (the saved keys start with it)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


# --- lukemelas EfficientNet-B4 (used by SBI and DeepfakeBench) ----------------------------------

# (repeats, kernel, stride, expand, in, out) of EfficientNet-B0; B4 scales width 1.4 and depth 1.8.
B0_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
WIDTH, DEPTH, SE_RATIO, BN_EPS = 1.4, 1.8, 0.25, 1e-3


def round_filters(c: int) -> int:
    """Width scaling to a multiple of 8, never more than 10% below the target."""
    scaled = c * WIDTH
    new = max(8, int(scaled + 4) // 8 * 8)
    return new + 8 if new < 0.9 * scaled else new


class StaticSameConv(nn.Conv2d):
    """TF "same" padding fixed at construction for one input size (lukemelas' static padding)."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False, size: int = 1
    ):
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=bias)
        pad = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        self.pads = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


class MBConv(nn.Module):
    """lukemelas ``MBConvBlock`` names: _expand_conv/_bn0, _depthwise_conv/_bn1, _se_*, _project_conv/_bn2."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int, size: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = StaticSameConv(cin, mid, 1, size=size)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = StaticSameConv(mid, mid, k, stride, groups=mid, size=size)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        squeezed = max(1, int(cin * SE_RATIO))
        self._se_reduce = nn.Conv2d(mid, squeezed, 1)
        self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = StaticSameConv(mid, cout, 1, size=size)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.silu(self._bn0(self._expand_conv(inputs))) if self.expand != 1 else inputs
        x = F.silu(self._bn1(self._depthwise_conv(x)))
        s = self._se_expand(F.silu(self._se_reduce(F.adaptive_avg_pool2d(x, 1))))
        x = self._bn2(self._project_conv(torch.sigmoid(s) * x))
        return x + inputs if self.skip else x


class LukemelasEfficientNetB4(nn.Module):
    """``EfficientNet.from_name("efficientnet-b4", num_classes=...)``: static padding for ``image_size``."""

    def __init__(self, num_classes: int = 2, image_size: int = 380) -> None:
        super().__init__()
        stem = round_filters(32)
        self._conv_stem = StaticSameConv(3, stem, 3, 2, size=image_size)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS)
        size = math.ceil(image_size / 2)
        blocks: list[nn.Module] = []
        for repeats, k, stride, expand, cin, cout in B0_BLOCKS:
            cin, cout = round_filters(cin), round_filters(cout)
            for i in range(math.ceil(repeats * DEPTH)):
                s = stride if i == 0 else 1
                blocks.append(MBConv(k, s, expand, cin if i == 0 else cout, cout, size))
                size = math.ceil(size / s)
        self._blocks = nn.ModuleList(blocks)
        head = round_filters(1280)
        self._conv_head = StaticSameConv(round_filters(320), head, 1, size=size)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS)
        self._fc: nn.Module = nn.Linear(head, num_classes)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.silu(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(F.adaptive_avg_pool2d(self.extract_features(x), 1).flatten(1))


class SbiDetector(nn.Module):
    """SBI's ``Detector``: the EfficientNet is ``self.net``; checkpoints are ``{"model": state_dict}``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = LukemelasEfficientNetB4(num_classes=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DfbEfficientNetB4(nn.Module):
    """DeepfakeBench's B4: lukemelas B4, plain unpadded stem conv, ``_fc`` removed, ``last_layer`` added."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.efficientnet = LukemelasEfficientNetB4(num_classes=1000)
        self.efficientnet._conv_stem = nn.Conv2d(3, 48, kernel_size=3, stride=2, bias=False)
        self.efficientnet._fc = nn.Identity()
        self.last_layer = nn.Linear(1792, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.adaptive_avg_pool2d(self.efficientnet.extract_features(x), 1).flatten(1))


def randomise_bn(model: nn.Module, size: int = 64, seed: int = 0) -> nn.Module:
    """Random affine terms plus BatchNorm statistics measured on random inputs (eval mode after).

    With PyTorch's default init and untouched running stats, activations shrink layer by layer
    and a deep net's logits barely depend on the input, so a wrong mapping could pass unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(2):
            model(torch.randn(4, 3, size, size, generator=g))
    for m in bns:
        m.momentum = 0.1
    return model.eval()
