"""create_attack: names used by ``unmask eval --robustness``."""

from __future__ import annotations

import pytest

from server.errors import ConfigError
from server.robust.attacks import ATTACK_NAMES, CWL2, EOTPGD, FGSM, PGD, create_attack


@pytest.mark.parametrize(
    ("name", "cls", "norm"),
    [
        pytest.param("fgsm", FGSM, None, id="fgsm"),
        pytest.param("pgd_linf", PGD, "linf", id="pgd_linf"),
        pytest.param("pgd_l2", PGD, "l2", id="pgd_l2"),
        pytest.param("cw_l2", CWL2, None, id="cw_l2"),
        pytest.param("eot_pgd", EOTPGD, None, id="eot_pgd"),
    ],
)
def test_builds_each_named_attack(toy_model, name, cls, norm):
    attack = create_attack(name, toy_model)
    assert type(attack) is cls and attack.model is toy_model
    if norm:
        assert attack.norm == norm


def test_names_are_listed():
    assert ATTACK_NAMES == ("fgsm", "pgd_linf", "pgd_l2", "cw_l2", "eot_pgd")


def test_keyword_overrides_reach_the_attack(toy_model):
    attack = create_attack("pgd_linf", toy_model, eps=0.03, steps=4, seed=1)
    assert (attack.eps, attack.steps, attack.seed) == (0.03, 4, 1)


def test_unknown_name_is_a_config_error(toy_model):
    with pytest.raises(ConfigError, match="fgsm"):
        create_attack("deepfool", toy_model)


def test_unknown_argument_is_a_config_error(toy_model):
    with pytest.raises(ConfigError):
        create_attack("fgsm", toy_model, radius=3)
