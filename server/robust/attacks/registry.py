"""Build an attack by name (``unmask eval --robustness``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from server.errors import ConfigError
from server.robust.attacks.base import Attack
from server.robust.attacks.cw import CWL2
from server.robust.attacks.eot import EOTPGD
from server.robust.attacks.fgsm import FGSM
from server.robust.attacks.pgd import PGD

_FACTORIES: dict[str, Callable[..., Attack]] = {
    "fgsm": FGSM,
    "pgd_linf": lambda model, **kw: PGD(model, norm="linf", **kw),
    "pgd_l2": lambda model, **kw: PGD(model, norm="l2", **kw),
    "cw_l2": CWL2,
    "eot_pgd": EOTPGD,
}
ATTACK_NAMES = tuple(_FACTORIES)


def create_attack(name: str, model: nn.Module, **kwargs: Any) -> Attack:
    """The attack ``name`` on ``model``; ``kwargs`` override its defaults (paper settings)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(ATTACK_NAMES)}") from None
    try:
        return factory(model, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for attack {name!r}: {exc}") from exc
