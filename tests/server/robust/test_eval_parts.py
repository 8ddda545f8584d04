"""The purification part of eval-robustness judges purified crops by purify.json when it fits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from server.robust.eval_parts import Target, purification_section
from server.robust.evaluate import RobustnessConfig
from server.robust.purification import purifier_config
from server.robust.purify_calibration import PURIFY_FILENAME, PurifiedThreshold


@pytest.fixture
def model_dir(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def _section(model_dir: Path, tmp_path: Path) -> dict:
    gen = torch.Generator().manual_seed(0)
    reals, fakes = (torch.rand(4, 3, 128, 128, generator=gen) for _ in range(2))
    fooled, turned = np.array([True, True, False, False]), np.array([True, False, False, False])
    pools = {"fgsm": (torch.rand(4, 3, 128, 128, generator=gen), fooled, turned)}
    cfg = RobustnessConfig(data=tmp_path, model_dir=model_dir, out=tmp_path, purify_n=2, purifier="tiny")
    return purification_section(Target.load("default", model_dir), reals, fakes, pools, cfg)


def test_without_a_calibration_the_cards_threshold_judges(model_dir: Path, tmp_path: Path) -> None:
    p = _section(model_dir, tmp_path)
    assert p["threshold_source"] == "card" and p["calibration"] is None
    assert p["threshold"] == Target.load("default", model_dir).card.threshold
    assert p["card_threshold"]["retain_rate"] == p["retain_rate"]


@pytest.mark.parametrize("cut", [1e-6, 1 - 1e-6])
def test_a_matching_calibration_judges_the_purified_crops(
    model_dir: Path, tmp_path: Path, cut: float
) -> None:
    card = Target.load("default", model_dir).card
    cal = PurifiedThreshold(cut, card.weights_sha256, purifier_config("tiny").version())
    cal.save(model_dir / PURIFY_FILENAME)
    p = _section(model_dir, tmp_path)
    assert (p["threshold_source"], p["threshold"]) == (PURIFY_FILENAME, cut)
    # Everything is called fake below a near-zero cut and real above a near-one cut.
    everything_fake = cut < 0.5
    assert p["restore_rate"] == (1.0 if everything_fake else 0.0)
    assert p["retain_real"] == (0.0 if everything_fake else 1.0)
    assert p["retain_fake"] == (1.0 if everything_fake else 0.0)
    # Of the two fooled fakes picked, only the first was turned by the attack (right unperturbed).
    assert [x["turned_by_attack"] for x in p["picks"]] == [True, False]
    assert (p["n_turned"], p["restored_turned"]) == (1, 1 if everything_fake else 0)


def test_a_calibration_of_another_purifier_is_ignored(model_dir: Path, tmp_path: Path) -> None:
    card = Target.load("default", model_dir).card
    PurifiedThreshold(1e-6, card.weights_sha256, purifier_config("cpu").version()).save(
        model_dir / PURIFY_FILENAME
    )
    assert _section(model_dir, tmp_path)["threshold_source"] == "card"


def test_the_section_names_the_device_its_fits_ran_on(model_dir: Path, tmp_path: Path) -> None:
    assert _section(model_dir, tmp_path)["device"] == "cpu"


def test_a_model_trained_with_other_thread_counts_is_the_same_training() -> None:
    from server.robust.eval_parts import _same_training
    from server.vision.train import TrainConfig

    cfg = TrainConfig(data=Path("crops"), out=Path("m"), arch="unmask_tiny", threads=1, progress=False)
    saved = {**cfg.to_dict(), "threads": 8, "progress": True}
    assert _same_training(json.loads(json.dumps(saved)), cfg)
    assert not _same_training({**json.loads(json.dumps(saved)), "seed": cfg.seed + 1}, cfg)
    assert not _same_training(None, cfg)
