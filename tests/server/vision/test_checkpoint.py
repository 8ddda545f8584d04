"""Tests for saving and loading detector checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from server.errors import CheckpointError
from server.vision.card import default_card
from server.vision.checkpoint import CARD_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint, sha256_file
from server.vision.registry import create_model

torch.set_num_threads(1)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = create_model("unmask_tiny").eval()
    save_checkpoint(model, default_card("unmask_tiny", id="t"), tmp_path / "ckpt")
    return tmp_path / "ckpt", model


def test_round_trip_gives_same_logits(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, model = saved
    loaded, card = load_checkpoint(directory)
    assert not loaded.training
    assert card.weights_sha256 == sha256_file(directory / WEIGHTS_FILE)
    assert card.created_at  # filled in
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_save_returns_the_stored_card(tmp_path: Path) -> None:
    card = save_checkpoint(create_model("unmask_tiny"), default_card("unmask_tiny"), tmp_path)
    assert json.loads((tmp_path / CARD_FILE).read_text()) == card.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_paths_are_named(tmp_path: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    with pytest.raises(CheckpointError, match="directory not found"):
        load_checkpoint(tmp_path / "nope")
    directory, _ = saved
    (directory / CARD_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"card not found: .*card\.json"):
        load_checkpoint(directory)
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"weights not found: .*model\.safetensors"):
        load_checkpoint(directory)


def test_corrupt_card(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    (directory / CARD_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_checkpoint(directory)
    (directory / CARD_FILE).write_text('{"id": "x"}')
    with pytest.raises(CheckpointError, match="missing fields"):
        load_checkpoint(directory)


def test_sha256_mismatch(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    raw = bytearray((directory / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (directory / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"sha256 .* does not match the model card"):
        load_checkpoint(directory)


def _edit_card(directory: Path, **changes: object) -> None:
    d = json.loads((directory / CARD_FILE).read_text())
    d.update(changes)
    (directory / CARD_FILE).write_text(json.dumps(d))


def test_weights_of_another_architecture(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    _edit_card(directory, architecture="resnet18")
    with pytest.raises(CheckpointError, match=r"missing keys \['bn1\.bias'.*unexpected keys \['features"):
        load_checkpoint(directory)


def test_weights_of_another_shape(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    _edit_card(directory, arch_kwargs={"width": 0.5})
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_checkpoint(directory)


def test_bad_arch_kwargs(saved: tuple[Path, torch.nn.Module]) -> None:
    directory, _ = saved
    _edit_card(directory, arch_kwargs={"colour": "red"})
    with pytest.raises(CheckpointError, match="cannot build 'unmask_tiny'"):
        load_checkpoint(directory)
