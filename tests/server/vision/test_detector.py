"""Tests for batched detector inference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from server.vision import detector as detector_module
from server.vision.calibration import apply_calibration
from server.vision.card import default_card
from server.vision.checkpoint import save_checkpoint
from server.vision.detector import Detector
from server.vision.registry import create_model

torch.set_num_threads(1)
T = 2.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    card = default_card("unmask_tiny", calibration={"type": "temperature", "temperature": T})
    save_checkpoint(create_model("unmask_tiny"), card, directory)
    return directory


@pytest.fixture(scope="module")
def det(model_dir: Path) -> Detector:
    return Detector.load(model_dir, device="cpu")


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(128, 128), (200, 180), (64, 90)]
    return [rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8) for i in range(n)]


def test_auto_device(model_dir: Path) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert Detector.load(model_dir).device.type == expected


def test_predict_is_calibrated_probability(det: Detector) -> None:
    batch = crops(5)
    p = det.predict(batch)
    assert p.shape == (5,) and p.dtype == np.float32
    assert ((p >= 0) & (p <= 1)).all()
    logits = det.logits(batch)
    assert logits.shape == (5, 2) and logits.dtype == np.float32
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(logits[:, 1] - logits[:, 0]) / T)), rtol=1e-5)
    np.testing.assert_allclose(p, apply_calibration(logits, det.card.calibration))


def test_empty_input(det: Detector) -> None:
    assert det.predict([]).shape == (0,)
    assert det.logits([]).shape == (0, 2)


def test_batching_does_not_change_results(det: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = crops(7)
    whole = det.logits(batch)
    monkeypatch.setattr(detector_module, "MAX_BATCH", 3)
    np.testing.assert_allclose(det.logits(batch), whole, atol=1e-5)


def test_preprocess_resizes_and_normalises(det: Detector) -> None:
    gray = np.full((300, 200, 3), 128, np.uint8)
    x = det.preprocess([gray, gray])
    assert x.shape == (2, 3, 128, 128) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (128 / 255 - np.array(det.card.mean)) / np.array(det.card.std)
    np.testing.assert_allclose(x[0, :, 5, 7].numpy(), expected, rtol=1e-5)


def test_pixel_model_matches_logits(det: Detector) -> None:
    batch = crops(3, seed=1)[:1] * 2  # exact input size: no resize on either path
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255
    pixel = det.pixel_model()
    assert not pixel.training
    with torch.no_grad():
        out = pixel(x).numpy()
    np.testing.assert_allclose(out, det.logits(batch), atol=1e-4)


def test_pixel_model_has_gradients(det: Detector) -> None:
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    det.pixel_model()(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), "img"])
def test_bad_crops(det: Detector, bad: object) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        det.predict([bad])  # type: ignore[list-item]


def test_importing_the_package_loads_no_torch() -> None:
    code = "import sys, server.vision; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])
