"""The model card: what a detector checkpoint is, how to feed it and how far to trust it."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from server.errors import CheckpointError
from server.vision.registry import is_model

FORMAT_VERSION = 1
LABELS = ("real", "fake")  # logit index 0 = real, 1 = fake/manipulated, for every detector
CALIBRATION_TYPES = ("none", "temperature", "isotonic")
# Fields a stored card may omit (older cards, cards written by hand).
OPTIONAL_FIELDS = {"notes", "format_version"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad(name: str, why: str) -> CheckpointError:
    return CheckpointError(f"model card field {name!r} {why}", field=name)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _floats3(name: str, value: Any, positive: bool = False) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3 or not all(_is_number(v) for v in value):
        raise _bad(name, f"must be 3 numbers, got {value!r}")
    if positive and min(value) <= 0:
        raise _bad(name, f"must be positive, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _check_calibration(cal: Any) -> dict[str, Any]:
    if not isinstance(cal, dict) or cal.get("type") not in CALIBRATION_TYPES:
        raise _bad("calibration", f"must be a dict with type in {CALIBRATION_TYPES}, got {cal!r}")
    if cal["type"] == "temperature":
        t = cal.get("temperature")
        if not _is_number(t) or t <= 0:
            raise _bad("calibration", f"temperature must be a positive number, got {t!r}")
    elif cal["type"] == "isotonic":
        x, y = cal.get("x"), cal.get("y")
        if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y) >= 1):
            raise _bad("calibration", "isotonic needs lists x and y of equal, non-zero length")
        if not all(_is_number(v) for v in x + y):
            raise _bad("calibration", "isotonic x and y must be numbers")
        if any(b < a for a, b in itertools.pairwise(x)) or not all(0 <= v <= 1 for v in y):
            raise _bad("calibration", "isotonic x must be non-decreasing and y within [0, 1]")
    return dict(cal)


@dataclass(frozen=True)
class ModelCard:
    """Identity, input contract, calibration and provenance of one detector checkpoint."""

    id: str
    version: str
    architecture: str
    arch_kwargs: dict[str, Any]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: tuple[str, str]
    threshold: float
    calibration: dict[str, Any]
    training_data: str
    metrics: dict[str, Any]
    demo: bool
    weights_sha256: str = ""  # filled in by save_checkpoint
    created_at: str = ""  # ISO 8601; filled in by save_checkpoint when empty
    notes: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        """Validate every field and normalise JSON lists to tuples."""
        put = object.__setattr__
        for name in (
            "id",
            "version",
            "architecture",
            "training_data",
            "notes",
            "weights_sha256",
            "created_at",
        ):
            if not isinstance(getattr(self, name), str):
                raise _bad(name, f"must be a string, got {getattr(self, name)!r}")
        for name in ("id", "version"):
            if not getattr(self, name).strip():
                raise _bad(name, "must not be empty")
        if not is_model(self.architecture):
            raise _bad("architecture", f"names an unknown architecture {self.architecture!r}")
        for name in ("arch_kwargs", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise _bad(name, f"must be a dict, got {getattr(self, name)!r}")
        size = self.input_size
        if not (
            isinstance(size, list | tuple)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise _bad("input_size", f"must be 2 positive ints (H, W), got {size!r}")
        put(self, "input_size", tuple(size))
        put(self, "mean", _floats3("mean", self.mean))
        put(self, "std", _floats3("std", self.std, positive=True))
        if not isinstance(self.labels, list | tuple) or tuple(self.labels) != LABELS:
            raise _bad("labels", f"must be {list(LABELS)} (index 0 = real, 1 = fake), got {self.labels!r}")
        put(self, "labels", LABELS)
        if not _is_number(self.threshold) or not 0.0 <= self.threshold <= 1.0:
            raise _bad("threshold", f"must be a number in [0, 1], got {self.threshold!r}")
        put(self, "threshold", float(self.threshold))
        put(self, "calibration", _check_calibration(self.calibration))
        if not isinstance(self.demo, bool):
            raise _bad("demo", f"must be a bool, got {self.demo!r}")
        if self.weights_sha256 and not _SHA256.fullmatch(self.weights_sha256):
            raise _bad("weights_sha256", "must be 64 lowercase hex digits")
        if self.created_at:
            try:
                datetime.fromisoformat(self.created_at)
            except ValueError:
                raise _bad("created_at", f"must be an ISO 8601 time, got {self.created_at!r}") from None
        if self.format_version != FORMAT_VERSION or isinstance(self.format_version, bool):
            raise _bad("format_version", f"must be {FORMAT_VERSION}, got {self.format_version!r}")

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """Build a card from stored JSON; every missing or unknown field is named in one error."""
        if not isinstance(data, dict):
            raise CheckpointError(f"model card must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n not in OPTIONAL_FIELDS]
        if missing:
            raise CheckpointError(f"model card is missing fields: {', '.join(missing)}", missing=missing)
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise CheckpointError(f"model card has unknown fields: {', '.join(unknown)}", unknown=unknown)
        if not isinstance(data["weights_sha256"], str) or not _SHA256.fullmatch(data["weights_sha256"]):
            raise _bad("weights_sha256", "must be 64 lowercase hex digits")
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. an unhashable where a string was expected
            raise CheckpointError(f"model card is invalid: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        for name in ("input_size", "mean", "std", "labels"):
            out[name] = list(out[name])
        return out

    def to_json(self) -> str:
        """The card as indented JSON, as stored in ``card.json``."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def default_card(architecture: str, **overrides: Any) -> ModelCard:
    """A card with the architecture's default input contract and no calibration (for tests/training)."""
    from server.vision.registry import arch_defaults

    d = arch_defaults(architecture)
    values: dict[str, Any] = {
        "id": f"{architecture}-untrained",
        "version": "0",
        "architecture": architecture,
        "arch_kwargs": {},
        "input_size": d.input_size,
        "mean": d.mean,
        "std": d.std,
        "labels": LABELS,
        "threshold": 0.5,
        "calibration": {"type": "none"},
        "training_data": "",
        "metrics": {},
        "demo": True,
    }
    values.update(overrides)
    return ModelCard(**values)


__all__ = ["CALIBRATION_TYPES", "FORMAT_VERSION", "LABELS", "ModelCard", "default_card"]
