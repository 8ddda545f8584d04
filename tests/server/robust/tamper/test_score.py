"""TamperScorer: fitting, thresholds for a target FPR, JSON round trip, end to end on the toy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from server.errors import CheckpointError
from server.robust.attacks import FGSM, PGD
from server.robust.tamper import TAMPER_FILENAME, CheckConfig, TamperScorer, calibration_attacks

N_FEATURES = len(CheckConfig().feature_names())


def synthetic(n: int, shift: float, seed: int) -> np.ndarray:
    """Gaussian feature rows; attacked rows are shifted along every feature."""
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, N_FEATURES))


@pytest.fixture(scope="module")
def fitted() -> TamperScorer:
    return TamperScorer().fit(synthetic(400, 0.0, 0), synthetic(400, 2.0, 1))


def test_logistic_fit_separates_and_meets_the_target_fpr(fitted):
    clean, attacked = synthetic(2000, 0.0, 2), synthetic(2000, 2.0, 3)
    fpr = fitted.suspicious(fitted.score_features(clean)).mean()
    tpr = fitted.suspicious(fitted.score_features(attacked)).mean()
    assert fitted.method == "logistic"
    assert fpr <= 0.08 and tpr >= 0.95
    assert fitted.stats["clean_fpr"] <= 0.05


def test_scores_are_probabilities(fitted):
    scores = fitted.score_features(synthetic(100, 1.0, 4))
    assert scores.shape == (100,) and ((scores >= 0) & (scores <= 1)).all()


def test_logistic_scores_are_calibrated_on_balanced_data():
    # Overlapping classes, so every probability band holds enough frames to check.
    scorer = TamperScorer().fit(synthetic(2000, 0.0, 5), synthetic(2000, 0.4, 6))
    clean, attacked = synthetic(5000, 0.0, 7), synthetic(5000, 0.4, 8)
    scores = np.r_[scorer.score_features(clean), scorer.score_features(attacked)]
    truth = np.r_[np.zeros(5000), np.ones(5000)]
    for low in (0.1, 0.3, 0.5, 0.7):
        band = (scores >= low) & (scores < low + 0.2)
        assert band.sum() >= 200
        assert abs(truth[band].mean() - scores[band].mean()) < 0.05


def test_threshold_follows_the_target_fpr():
    scorer = TamperScorer().fit(synthetic(1000, 0.0, 9), synthetic(1000, 1.0, 10), target_fpr=0.01)
    assert scorer.stats["clean_fpr"] <= 0.01
    assert (scorer.score_features(synthetic(5000, 0.0, 11)) > scorer.threshold).mean() <= 0.02


def test_without_attacked_frames_falls_back_to_zscore():
    clean = synthetic(500, 0.0, 9)
    scorer = TamperScorer().fit(clean)
    assert scorer.method == "zscore" and scorer.weights is None
    assert not scorer.to_dict()["calibrated_probability"]
    assert scorer.suspicious(scorer.score_features(synthetic(500, 3.0, 10))).mean() >= 0.95
    assert scorer.suspicious(scorer.score_features(clean)).mean() <= 0.05


def test_json_round_trip_gives_identical_scores(fitted, tmp_path):
    path = fitted.save(tmp_path / TAMPER_FILENAME)
    loaded = TamperScorer.load(path)
    rows = synthetic(50, 1.0, 11)
    np.testing.assert_array_equal(loaded.score_features(rows), fitted.score_features(rows))
    assert loaded.threshold == fitted.threshold and loaded.config == fitted.config
    assert json.loads(path.read_text())["features"] == list(CheckConfig().feature_names())


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d.pop("threshold"), id="missing-field"),
        pytest.param(lambda d: d.update(format_version=99), id="version"),
        pytest.param(lambda d: d.update(method="svm"), id="method"),
        pytest.param(lambda d: d.update(weights=[1.0]), id="weights-length"),
        pytest.param(lambda d: d.update(features=["other"]), id="features"),
    ],
)
def test_load_rejects_malformed_documents(fitted, tmp_path, mutate):
    data = fitted.to_dict()
    mutate(data)
    path = tmp_path / TAMPER_FILENAME
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError):
        TamperScorer.load(path)


def test_load_rejects_unreadable_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        TamperScorer.load(tmp_path / "bad.json")
    with pytest.raises(CheckpointError):
        TamperScorer.load(tmp_path / "missing.json")


def test_load_for_ignores_a_calibration_of_other_weights(fitted, tmp_path, caplog):
    ours, other = "a" * 64, "b" * 64
    assert TamperScorer.load_for(tmp_path, ours) is None  # no tamper.json
    mine = TamperScorer.from_dict(fitted.to_dict())
    mine.stats["weights_sha256"] = ours
    mine.save(tmp_path / TAMPER_FILENAME)
    loaded = TamperScorer.load_for(tmp_path, ours)
    assert loaded is not None and loaded.threshold == fitted.threshold
    with caplog.at_level("WARNING"):
        assert TamperScorer.load_for(tmp_path, other) is None
    assert "unmask tamper fit" in caplog.text


def test_unfitted_scorer_refuses_to_score():
    with pytest.raises(CheckpointError):
        TamperScorer().score_features(np.zeros((1, N_FEATURES)))


def test_rejects_bad_fit_arguments():
    with pytest.raises(ValueError):
        TamperScorer().fit(np.zeros((10, N_FEATURES + 1)))
    with pytest.raises(ValueError):
        TamperScorer().fit(synthetic(10, 0.0, 0), target_fpr=0.0)


def test_flags_fgsm_and_pgd_at_the_papers_eps_on_the_toy(toy_model, toy_batch):
    clean, labels = toy_batch(160, seed=111)
    scorer = TamperScorer().fit_frames(toy_model, clean, calibration_attacks(toy_model, clean, labels))
    held_out, held_labels = toy_batch(400, seed=222)
    fgsm = FGSM(toy_model, eps=0.02)(held_out, held_labels)
    pgd = PGD(toy_model, eps=0.02, steps=10, seed=1)(held_out, held_labels)
    with torch.no_grad():
        logits = toy_model(held_out)
    clean_scores = scorer.score(toy_model, held_out, logits=logits)
    np.testing.assert_allclose(clean_scores, scorer.score(toy_model, held_out), atol=1e-6)
    fpr = scorer.suspicious(clean_scores).mean()
    assert fpr <= 0.1
    for attacked in (fgsm, pgd):
        assert scorer.suspicious(scorer.score(toy_model, attacked)).mean() >= 0.95
