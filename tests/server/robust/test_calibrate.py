"""fit_tamper: tamper.json beside the model card, crops from sample folders, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from server.cli import build_parser
from server.cli_robust import register
from server.robust.calibrate import evenly, fit_tamper, load_crops, mixed_attacks, to_tensor
from server.robust.tamper import TAMPER_FILENAME, TamperScorer
from server.vision.datasets import write_rgb
from server.vision.detector import Detector

# One ε, two PGD steps, four codec crops: the fit's plumbing, not its accuracy, at a tenth of the cost.
FAST = {"eps_values": (0.02,), "pgd_steps": 2, "codec_max": 4, "codec_steps": 2}


def face_crops(n: int, seed: int, fake: bool = False) -> list[np.ndarray]:
    """``n`` jittered 128 px crops of the astronaut's face; "fakes" get a tinted, blurred centre."""
    rng = np.random.default_rng(seed)
    img = data.astronaut()
    out = []
    for _ in range(n):
        dy, dx = rng.integers(-10, 11, 2)
        crop = cv2.resize(
            img[30 + dy : 230 + dy, 150 + dx : 350 + dx], (128, 128), interpolation=cv2.INTER_AREA
        )
        if fake:
            centre = crop[32:96, 32:96].astype(np.float32)
            crop[32:96, 32:96] = np.clip(cv2.GaussianBlur(centre, (5, 5), 2) * (1.1, 0.95, 0.9), 0, 255)
        out.append(crop)
    return out


@pytest.fixture
def model_dir(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint (fit_tamper writes into it)."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def test_fit_tamper_writes_a_loadable_calibration_beside_the_card(model_dir: Path) -> None:
    scorer = fit_tamper(model_dir, face_crops(10, 0), face_crops(10, 1, fake=True), **FAST)
    path = model_dir / TAMPER_FILENAME
    assert path.is_file()
    loaded = TamperScorer.load(path)
    assert loaded.threshold == scorer.threshold and loaded.method == "logistic"
    stats = loaded.stats
    assert stats["n_real"] == stats["n_fake"] == 10
    assert stats["n_clean"] == 24 and stats["n_attacked"] == 24  # + 4 encoded clean / 4 codec-robust
    assert stats["detector"] == "test-tiny@0.0.1" and stats["eps"] == [0.02]
    assert set(stats["family_tpr"]) == {"paper", "codec"}
    assert stats["clean_fpr"] <= 0.1  # out-of-fold, 24 clean frames: at most 1-2 above


def test_fit_tamper_without_save_leaves_the_model_dir_alone(model_dir: Path) -> None:
    fit_tamper(model_dir, face_crops(6, 2), face_crops(6, 3, fake=True), save=False, **FAST)
    assert not (model_dir / TAMPER_FILENAME).exists()


def test_mixed_attacks_give_one_8_bit_copy_per_crop_within_its_budget(tiny_checkpoint: Path) -> None:
    net = Detector.load(tiny_checkpoint, device="cpu").pixel_model()
    clean = to_tensor(face_crops(8, 4), (128, 128))
    adv = mixed_attacks(net, clean, torch.ones(8, dtype=torch.long), (0.01, 0.03), pgd_steps=2)
    assert adv.shape == clean.shape
    assert torch.equal(adv, (adv * 255).round() / 255)
    linf = (adv - clean).flatten(1).abs().amax(dim=1)
    budget = torch.tensor([0.01, 0.01, 0.03, 0.03] * 2)  # FGSM ε₁, PGD ε₁, FGSM ε₂, PGD ε₂, again
    assert (linf <= budget + 1 / 255).all() and (linf > 0).all()


def test_load_crops_reads_an_image_folder_and_caps_each_class(tmp_path: Path) -> None:
    for label, crops in (("real", face_crops(7, 5)), ("fake", face_crops(3, 6, fake=True))):
        (tmp_path / label).mkdir()
        for i, c in enumerate(crops):
            write_rgb(tmp_path / label / f"v{i}__f00000.png", c)
    real, fake = load_crops(tmp_path, (128, 128), max_per_class=4)
    assert len(real) == 4 and len(fake) == 3
    assert real[0].shape == (128, 128, 3) and real[0].dtype == np.uint8


def test_evenly_spreads_over_the_whole_sequence() -> None:
    assert evenly(range(10), 3) == [0, 4, 9] or evenly(range(10), 3) == [0, 5, 9]
    assert evenly([1, 2], 5) == [1, 2]


def test_cli_tamper_fit(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import server.robust.calibrate as calibrate

    for label, crops in (("real", face_crops(6, 7)), ("fake", face_crops(6, 8, fake=True))):
        (tmp_path / "crops" / label).mkdir(parents=True)
        for i, c in enumerate(crops):
            write_rgb(tmp_path / "crops" / label / f"v{i}__f00000.png", c)
    monkeypatch.setattr(calibrate, "CALIBRATION_PGD_STEPS", FAST["pgd_steps"])
    monkeypatch.setattr(calibrate, "FIT_EPS", FAST["eps_values"])
    monkeypatch.setattr(calibrate, "CODEC_MAX_CROPS", FAST["codec_max"])
    monkeypatch.setattr(calibrate, "CODEC_STEPS", FAST["codec_steps"])
    args = build_parser([register]).parse_args(
        ["tamper", "fit", "--model-dir", str(model_dir), "--data", str(tmp_path / "crops")]
    )
    assert args.func(args) == 0
    assert (model_dir / TAMPER_FILENAME).is_file()
    assert "threshold" in capsys.readouterr().out
