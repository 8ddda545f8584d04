"""Detector checkpoints on disk: a directory with ``model.safetensors`` and ``card.json``."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from server.errors import CheckpointError
from server.vision.card import ModelCard
from server.vision.registry import create_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
_KEYS_SHOWN = 5  # state-dict keys quoted in an error; big models differ in hundreds


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    """Write via a temporary sibling and rename, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(model: nn.Module, card: ModelCard, directory: str | Path) -> ModelCard:
    """Write the weights and the card (with their SHA-256 and a creation time); return the final card."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    _write_atomic(weights, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    final = replace(
        card,
        weights_sha256=sha256_file(weights),
        created_at=card.created_at or datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_atomic(directory / CARD_FILE, lambda p: p.write_text(final.to_json(), encoding="utf-8"))
    return final


def load_card(directory: str | Path) -> ModelCard:
    """Read and validate ``card.json`` of a checkpoint directory."""
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"model card not found: {path}", path=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"model card {path} is not readable JSON: {exc}", path=str(path)) from exc
    return ModelCard.from_dict(data)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Verify and load a checkpoint: the model (eval mode, on ``device``) and its card."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}", path=str(directory))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights}", path=str(weights))
    card = load_card(directory)
    actual = sha256_file(weights)
    if actual != card.weights_sha256:
        raise CheckpointError(
            f"weights {weights} have sha256 {actual}, which does not match the model card's "
            f"{card.weights_sha256}: the file is corrupt or belongs to another card",
            path=str(weights),
        )
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"weights {weights} are not a readable safetensors file: {exc}") from exc
    try:
        model = create_model(card.architecture, **card.arch_kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot build {card.architecture!r} from the model card: {exc}") from exc
    _load_strict(model, state, weights)
    return model.to(device).eval(), card


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], weights: Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names the first differing keys."""
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"weights {weights} do not fit the architecture: "
            f"{len(missing)} missing keys {missing[:_KEYS_SHOWN]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:_KEYS_SHOWN]}",
            missing=missing[:_KEYS_SHOWN],
            unexpected=unexpected[:_KEYS_SHOWN],
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"weights {weights} do not fit the architecture: {exc}") from exc
