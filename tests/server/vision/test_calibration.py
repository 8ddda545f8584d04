"""Tests for temperature scaling and isotonic calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.vision.calibration import apply_calibration, fit_isotonic, fit_temperature


def overconfident(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true probabilities are softmax(logits / temperature), with labels drawn from them."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
    logits = np.stack([np.zeros(n), margin * temperature], axis=1)
    return logits, labels


def test_temperature_is_recovered() -> None:
    logits, labels = overconfident(20_000, 3.0)
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)
    logits, labels = overconfident(20_000, 0.5, seed=1)
    assert fit_temperature(torch.from_numpy(logits), torch.from_numpy(labels)) == pytest.approx(0.5, rel=0.1)


def test_temperature_input_checks() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        fit_temperature(np.zeros((3, 3)), [0, 1, 0])
    with pytest.raises(ValueError, match="same non-zero number"):
        fit_temperature(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        fit_temperature(np.zeros((2, 2)), [0, 2])


def test_isotonic_is_monotone_and_fits_frequencies() -> None:
    probs = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    labels = [0, 1, 0, 0, 1, 0, 1, 1]
    cal = fit_isotonic(probs, labels)
    assert cal["type"] == "isotonic"
    assert all(b >= a for a, b in zip(cal["x"], cal["x"][1:], strict=False))
    assert all(b >= a for a, b in zip(cal["y"], cal["y"][1:], strict=False))
    # Pool-adjacent-violators: [0] [1,0,0] -> 1/3, [1,0] -> 1/2, [1] [1].
    assert cal["y"][0] == 0.0 and cal["y"][-1] == 1.0
    assert pytest.approx(1 / 3) in cal["y"] and 0.5 in cal["y"]


def test_isotonic_applied_to_logits() -> None:
    logits, labels = overconfident(2000, 4.0)
    p_raw = apply_calibration(logits, {"type": "none"})
    cal = fit_isotonic(p_raw, labels)
    p = apply_calibration(logits, cal)
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    order = np.argsort(p_raw)
    assert (np.diff(p[order]) >= -1e-7).all()
    # Calibrated scores have lower Brier score than the overconfident raw ones.
    assert np.mean((p - labels) ** 2) < np.mean((p_raw - labels) ** 2)


def test_apply_none_and_temperature() -> None:
    logits = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, -1.0]])
    soft = torch.softmax(torch.tensor(logits), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(apply_calibration(logits, {"type": "none"}), soft, rtol=1e-6)
    soft_t = torch.softmax(torch.tensor(logits) / 2.0, dim=1)[:, 1].numpy()
    np.testing.assert_allclose(
        apply_calibration(logits, {"type": "temperature", "temperature": 2.0}), soft_t, rtol=1e-6
    )


def test_extreme_logits_do_not_overflow() -> None:
    p = apply_calibration(np.array([[0.0, 1e4], [1e4, 0.0]]), {"type": "temperature", "temperature": 0.05})
    np.testing.assert_array_equal(p, [1.0, 0.0])


def test_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown calibration type"):
        apply_calibration(np.zeros((1, 2)), {"type": "platt"})
