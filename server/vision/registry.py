"""The detector architecture registry: names → builder functions, timm-style."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inception/Xception-style scaling to [-1, 1].
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ArchDefaults:
    """Default input size (H, W) and normalisation of an architecture, like timm's pretrained cfg."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)

_BUILDERS: dict[str, Builder] = {}
_DEFAULTS: dict[str, ArchDefaults] = {}


@overload
def register_model(fn: B, /) -> B: ...
@overload
def register_model(*, name: str | None = None, defaults: ArchDefaults | None = None) -> Callable[[B], B]: ...
def register_model(
    fn: B | None = None, /, *, name: str | None = None, defaults: ArchDefaults | None = None
) -> B | Callable[[B], B]:
    """Register a builder under ``name`` (default: the function's name); bare or with arguments."""

    def decorate(builder: B) -> B:
        key = name or builder.__name__
        if key in _BUILDERS:
            raise ValueError(f"model {key!r} is already registered")
        _BUILDERS[key] = builder
        _DEFAULTS[key] = defaults or ArchDefaults()
        return builder

    return decorate(fn) if fn is not None else decorate


def _load_builtin() -> None:
    """Import the built-in architectures (lazily, so importing the registry stays cheap)."""
    from server.vision import architectures  # noqa: F401


def list_models() -> list[str]:
    """Sorted names of every registered architecture."""
    _load_builtin()
    return sorted(_BUILDERS)


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered architecture."""
    _load_builtin()
    return name in _BUILDERS


def _check(name: str) -> None:
    if not is_model(name):
        raise ValueError(f"unknown model architecture {name!r}; known: {', '.join(list_models())}")


def arch_defaults(name: str) -> ArchDefaults:
    """The default input size and normalisation of architecture ``name``."""
    _check(name)
    return _DEFAULTS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` (2-way head: index 0 = real, 1 = fake); ``None`` kwargs are dropped."""
    _check(name)
    return _BUILDERS[name](**{k: v for k, v in kwargs.items() if v is not None})
