"""Built-in detector architectures; timm is imported only when a timm model is built."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from server.vision.registry import HALF_MEAN, HALF_STD, ArchDefaults, register_model


def _timm(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model (never pretrained: the service runs offline)."""
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


@register_model
def vgg16(num_classes: int = 2, drop_rate: float = 0.0) -> nn.Module:
    """VGG-16, one of the paper's two detectors."""
    return _timm("vgg16", num_classes, drop_rate=drop_rate)


@register_model
def resnet18(num_classes: int = 2, drop_rate: float = 0.0) -> nn.Module:
    """ResNet-18, the paper's other detector."""
    return _timm("resnet18", num_classes, drop_rate=drop_rate)


@register_model
def efficientnet_b0(num_classes: int = 2, drop_rate: float = 0.2) -> nn.Module:
    """EfficientNet-B0: the best accuracy per CPU millisecond of the timm models we measured."""
    return _timm("efficientnet_b0", num_classes, drop_rate=drop_rate)


class StaticSamePadConv2d(nn.Conv2d):
    """A convolution with TF "same" padding frozen for one input size, as lukemelas'
    EfficientNet-PyTorch builds it (``Conv2dStaticSamePadding``); parameters named like nn.Conv2d."""

    def __init__(self, conv: nn.Conv2d, input_size: int) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            0,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
        )
        self.weight, self.bias = conv.weight, conv.bias
        pads: list[int] = []
        for k, s, d in zip(conv.kernel_size[::-1], conv.stride[::-1], conv.dilation[::-1], strict=True):
            pad = max((math.ceil(input_size / s) - 1) * s + (k - 1) * d + 1 - input_size, 0)
            pads += [pad // 2, pad - pad // 2]
        self.pads = tuple(pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


def _freeze_same_padding(model: nn.Module, image_size: int) -> None:
    """Replace timm's dynamic "same" convolutions (the stride-2 ones) by static ones for ``image_size``."""
    from timm.layers import Conv2dSame

    size = image_size
    if isinstance(model.conv_stem, Conv2dSame):
        model.conv_stem = StaticSamePadConv2d(model.conv_stem, size)
    size = math.ceil(size / model.conv_stem.stride[0])
    for stage in model.blocks:
        for block in stage:
            if isinstance(block.conv_dw, Conv2dSame):
                block.conv_dw = StaticSamePadConv2d(block.conv_dw, size)
            size = math.ceil(size / block.conv_dw.stride[0])


@register_model(defaults=ArchDefaults(input_size=(380, 380)))
def efficientnet_b4(
    num_classes: int = 2,
    drop_rate: float = 0.4,
    tf_same_padding: bool = False,
    static_padding_size: int | None = None,
    stem: str = "same",
) -> nn.Module:
    """EfficientNet-B4. For weights from lukemelas/EfficientNet-PyTorch (SBI, DeepfakeBench):
    ``tf_same_padding`` selects timm's TF port (same layout, BN eps 1e-3, "same" padding);
    ``static_padding_size`` freezes that padding for one input size as lukemelas does (equal to
    dynamic padding at that size); ``stem="valid"`` is DeepfakeBench's unpadded stem conv."""
    if (static_padding_size is not None or stem != "same") and not tf_same_padding:
        raise ValueError("static_padding_size and stem need tf_same_padding=True")
    if stem not in ("same", "valid"):
        raise ValueError(f"stem must be 'same' or 'valid', got {stem!r}")
    model = _timm(
        "tf_efficientnet_b4" if tf_same_padding else "efficientnet_b4", num_classes, drop_rate=drop_rate
    )
    if static_padding_size is not None:
        _freeze_same_padding(model, static_padding_size)
    if stem == "valid":
        old = model.conv_stem
        model.conv_stem = nn.Conv2d(old.in_channels, old.out_channels, 3, 2, padding=0, bias=False)
    return model


@register_model(defaults=ArchDefaults(input_size=(299, 299), mean=HALF_MEAN, std=HALF_STD))
def xception(num_classes: int = 2, drop_rate: float = 0.0) -> nn.Module:
    """Xception as in FaceForensics++ (timm ``legacy_xception``: Cadene's layout, as DeepfakeBench)."""
    return _timm("legacy_xception", num_classes, drop_rate=drop_rate)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SeparableBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, with a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = _conv_bn(cin, cin, 3, stride, groups=cin)
        self.pw = _conv_bn(cin, cout, 1, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


class UnmaskTiny(nn.Module):
    """A ~0.25 M-parameter CNN for 128x128 crops: fast enough to score every face on a CPU."""

    # (out_channels, stride) per separable block; 128 px in, 4 px before pooling.
    PLAN = ((64, 2), (128, 2), (128, 1), (256, 2), (256, 1), (384, 2))

    def __init__(self, num_classes: int = 2, width: float = 1.0, drop_rate: float = 0.2) -> None:
        super().__init__()
        stem = max(8, round(32 * width))
        layers: list[nn.Module] = [_conv_bn(3, stem, 3, 2)]
        cin = stem
        for cout, stride in self.PLAN:
            cout = max(8, round(cout * width))
            layers.append(SeparableBlock(cin, cout, stride))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


@register_model(defaults=ArchDefaults(input_size=(128, 128)))
def unmask_tiny(num_classes: int = 2, width: float = 1.0, drop_rate: float = 0.2) -> nn.Module:
    """Unmask's own small CPU detector (see ``UnmaskTiny``)."""
    return UnmaskTiny(num_classes=num_classes, width=width, drop_rate=drop_rate)
