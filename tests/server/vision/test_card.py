"""Tests for the model card: round trip and validation."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from server.errors import CheckpointError
from server.vision.card import ModelCard, default_card

SHA = "ab" * 32


def card_dict(**changes: Any) -> dict[str, Any]:
    d = default_card("unmask_tiny", weights_sha256=SHA, created_at="2026-01-01T00:00:00+00:00").to_dict()
    d.update(changes)
    return d


def test_round_trip_through_json() -> None:
    card = ModelCard.from_dict(card_dict(calibration={"type": "temperature", "temperature": 1.5}))
    again = ModelCard.from_dict(json.loads(card.to_json()))
    assert again == card
    assert card.input_size == (128, 128) and card.labels == ("real", "fake")
    assert card.notes == "" and card.format_version == 1


def test_is_frozen() -> None:
    card = ModelCard.from_dict(card_dict())
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.threshold = 0.1  # type: ignore[misc]


def test_missing_fields_are_all_named() -> None:
    d = card_dict()
    for name in ("id", "threshold", "weights_sha256"):
        del d[name]
    del d["notes"]  # optional
    with pytest.raises(CheckpointError, match="missing fields: id, threshold, weights_sha256") as info:
        ModelCard.from_dict(d)
    assert info.value.details["missing"] == ["id", "threshold", "weights_sha256"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("threshold", 1.5),
        ("threshold", "0.5"),
        ("architecture", "resnet1000"),
        ("calibration", {"type": "platt"}),
        ("calibration", {"type": "temperature", "temperature": 0}),
        ("calibration", {"type": "isotonic", "x": [0.5, 0.1], "y": [0.2, 0.3]}),
        ("input_size", [128]),
        ("input_size", [128, -1]),
        ("input_size", [128.0, 128]),
        ("mean", [0.5, 0.5]),
        ("std", [0.5, 0.0, 0.5]),
        ("labels", ["fake", "real"]),
        ("demo", "yes"),
        ("weights_sha256", "xyz"),
        ("created_at", "yesterday"),
        ("format_version", 2),
        ("arch_kwargs", []),
    ],
)
def test_bad_values_name_the_field(name: str, value: Any) -> None:
    with pytest.raises(CheckpointError, match=repr(name)):
        ModelCard.from_dict(card_dict(**{name: value}))


def test_unknown_fields_and_non_objects_are_rejected() -> None:
    with pytest.raises(CheckpointError, match="unknown fields: colour"):
        ModelCard.from_dict(card_dict(colour="red"))
    with pytest.raises(CheckpointError, match="JSON object"):
        ModelCard.from_dict([1, 2])


def test_default_card_uses_arch_defaults() -> None:
    card = default_card("xception", id="x", demo=False)
    assert (card.input_size, card.mean, card.id, card.demo) == ((299, 299), (0.5, 0.5, 0.5), "x", False)
    assert card.weights_sha256 == ""  # filled in by save_checkpoint
