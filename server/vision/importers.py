"""Convert published upstream detector weights into Unmask checkpoints (``unmask model import``).

Upstream facts (read from the upstream code):
* DeepfakeBench (SCLBD/DeepfakeBench) saves its detector's ``state_dict``: the network is
  ``backbone.*``. Xception (``training/networks/xception.py``, mode "original") is Cadene's
  FaceForensics++ Xception plus an unused ``adjust_channel`` head; EfficientNet-B4
  (``efficientnetb4.py``) is lukemelas' B4 built for 380 px (static "same" padding) whose stem is
  replaced by an unpadded ``nn.Conv2d(3, 48, 3, stride=2)``, with ``_fc`` removed and a
  ``last_layer`` Linear(1792, 2). Both configs: resolution 256, mean = std = 0.5.
* SBI (mapooon/SelfBlendedImages) saves ``{"model": state_dict}`` of a ``Detector`` whose ``net``
  is ``EfficientNet.from_pretrained("efficientnet-b4", advprop=True, num_classes=2)``; inference
  feeds 380x380 RGB crops scaled to [0, 1] with no mean/std normalisation.
* All three train with label 0 = real, 1 = fake and report ``softmax(logits)[:, 1]`` as the fake
  probability, which is Unmask's convention too, so logits need no reordering.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from server.errors import CheckpointError
from server.vision.card import LABELS, ModelCard
from server.vision.checkpoint import save_checkpoint
from server.vision.registry import create_model

StateDict = dict[str, torch.Tensor]
_KEYS_SHOWN = 5


@dataclass(frozen=True)
class ImportSpec:
    """How one upstream checkpoint kind becomes an Unmask checkpoint."""

    architecture: str
    arch_kwargs: dict[str, Any]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    prefix: str  # the upstream wrapper's attribute path to the network
    map_key: Callable[[str, nn.Module], str | None]  # upstream key -> ours; None = drop on purpose
    training_data: str
    notes: str
    default_id: str


def _map_xception(key: str, model: nn.Module) -> str | None:
    """DeepfakeBench Xception → timm ``legacy_xception``: same names except the classifier."""
    if key.startswith("adjust_channel."):
        return None  # only used in mode "adjust_channel"
    return re.sub(r"^last_linear\.(?:1\.)?", "fc.", key)


# lukemelas MBConv child → timm child, for blocks with and without an expansion conv.
_MB_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_MB_NO_EXPAND = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFNET_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def _block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index) of each timm block in the order of lukemelas' flat ``_blocks`` list."""
    return [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def _map_lukemelas(key: str, model: nn.Module) -> str | None:
    """lukemelas EfficientNet names → timm ``tf_efficientnet_b4`` names."""
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if m:
        positions = _block_positions(model)
        n, child, param = int(m[1]), m[2], m[3]
        if n >= len(positions):
            return key  # reported as unexpected
        stage, idx = positions[n]
        table = _MB_EXPAND if hasattr(model.blocks[stage][idx], "conv_pwl") else _MB_NO_EXPAND
        return f"blocks.{stage}.{idx}.{table.get(child, child)}.{param}"
    head, _, rest = key.partition(".")
    return f"{_EFFNET_TOP.get(head, head)}.{rest}"


def _map_dfb_effnet(key: str, model: nn.Module) -> str | None:
    """DeepfakeBench B4: ``efficientnet.*`` is lukemelas, ``last_layer`` is the classifier."""
    if key.startswith("last_layer."):
        return "classifier." + key.removeprefix("last_layer.")
    if key.startswith("adjust_channel."):
        return None
    return _map_lukemelas(key.removeprefix("efficientnet."), model)


_DFB_NOTE = (
    "Converted from a DeepfakeBench checkpoint. DeepfakeBench crops faces from dlib landmarks "
    "(about 1.3x the face box) at 256x256; Unmask's own crops differ, so re-calibrate on your data."
)

IMPORT_KINDS: dict[str, ImportSpec] = {
    "deepfakebench-xception": ImportSpec(
        architecture="xception",
        arch_kwargs={},
        input_size=(256, 256),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        prefix="backbone.",
        map_key=_map_xception,
        training_data="DeepfakeBench (SCLBD/DeepfakeBench) Xception detector; its released weights "
        "are trained on FaceForensics++ c23",
        notes=_DFB_NOTE,
        default_id="deepfakebench-xception",
    ),
    "deepfakebench-efficientnetb4": ImportSpec(
        architecture="efficientnet_b4",
        arch_kwargs={"tf_same_padding": True, "static_padding_size": 380, "stem": "valid"},
        input_size=(256, 256),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        prefix="backbone.",
        map_key=_map_dfb_effnet,
        training_data="DeepfakeBench (SCLBD/DeepfakeBench) EfficientNet-B4 detector; its released "
        "weights are trained on FaceForensics++ c23",
        notes=_DFB_NOTE,
        default_id="deepfakebench-efficientnetb4",
    ),
    "sbi-efficientnetb4": ImportSpec(
        architecture="efficientnet_b4",
        arch_kwargs={"tf_same_padding": True, "static_padding_size": 380},
        input_size=(380, 380),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        prefix="net.",
        map_key=_map_lukemelas,
        training_data="Self-Blended Images (mapooon/SelfBlendedImages, CVPR 2022) EfficientNet-B4; "
        "its released weights are trained on FaceForensics++ real videos with self-blended fakes",
        notes="Converted from an SBI checkpoint. SBI crops RetinaFace boxes with 1/8 margin per side "
        "at 380x380 and feeds [0, 1] RGB without normalisation.",
        default_id="sbi-efficientnetb4",
    ),
}


def _unwrap(obj: Any) -> StateDict:
    """The tensor dict inside common wrappers: ``{"model": sd}``, ``{"state_dict": sd}``, …"""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if isinstance(obj, dict):
            inner = next(
                (obj[k] for k in ("state_dict", "model", "model_state_dict", "net") if k in obj), None
            )
            if isinstance(inner, dict):
                obj = inner
                continue
        break
    raise CheckpointError("upstream file holds no state dict (looked inside 'state_dict', 'model', 'net')")


def load_upstream_state_dict(path: str | Path) -> StateDict:
    """Load an upstream ``.pth`` safely (``weights_only``), unwrapped and without ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"upstream checkpoint not found: {path}", path=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors come in many types
        raise CheckpointError(f"cannot read upstream checkpoint {path}: {exc}", path=str(path)) from exc
    state = _unwrap(obj)
    return {k.removeprefix("module."): v for k, v in state.items()}


def convert_state_dict(kind: str, state: StateDict) -> tuple[nn.Module, StateDict]:
    """Map an upstream state dict onto our architecture; returns (our model with it loaded, our state)."""
    if kind not in IMPORT_KINDS:
        raise CheckpointError(f"unknown import kind {kind!r}; known: {', '.join(IMPORT_KINDS)}")
    spec = IMPORT_KINDS[kind]
    model = create_model(spec.architecture, **spec.arch_kwargs)
    expected = model.state_dict()
    ours: StateDict = {}
    for key, value in state.items():
        new = spec.map_key(key.removeprefix(spec.prefix), model)
        if new is None:
            continue
        if (
            new in expected
            and value.ndim == 2
            and expected[new].ndim == 4
            and value.numel() == expected[new].numel()
        ):
            value = value.reshape(expected[new].shape)  # 1x1 convs some exports store as 2-D
        ours[new] = value
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    bad_shape = [
        f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in ours.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            f"upstream weights do not fit {kind}: {len(missing)} missing {missing[:_KEYS_SHOWN]}, "
            f"{len(unexpected)} unexpected {unexpected[:_KEYS_SHOWN]}, "
            f"{len(bad_shape)} with wrong shape {bad_shape[:_KEYS_SHOWN]}",
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in ours.items()}, strict=True)
    return model.eval(), ours


def import_checkpoint(
    kind: str,
    state_dict_path: str | Path,
    out_dir: str | Path,
    *,
    model_id: str | None = None,
    version: str | None = None,
) -> ModelCard:
    """Convert the upstream file at ``state_dict_path`` into an Unmask checkpoint in ``out_dir``."""
    if kind not in IMPORT_KINDS:
        raise CheckpointError(f"unknown import kind {kind!r}; known: {', '.join(IMPORT_KINDS)}")
    spec = IMPORT_KINDS[kind]
    path = Path(state_dict_path)
    model, _ = convert_state_dict(kind, load_upstream_state_dict(path))
    upstream_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    card = ModelCard(
        id=model_id or spec.default_id,
        version=version or f"upstream-{upstream_sha[:12]}",
        architecture=spec.architecture,
        arch_kwargs=dict(spec.arch_kwargs),
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        labels=LABELS,
        threshold=0.5,
        calibration={"type": "none"},
        training_data=spec.training_data,
        metrics={},
        demo=False,
        notes=f"{spec.notes} Source file {path.name}, sha256 {upstream_sha}.",
    )
    return save_checkpoint(model, card, out_dir)
