"""The purified-crop threshold: its fit on toy scores, the score mapping, and which files are used."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from server.errors import CheckpointError
from server.robust.purify_calibration import PURIFY_FILENAME, PurifiedThreshold, fit_threshold


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_fit_puts_the_cut_halfway_in_logits_between_separable_scores() -> None:
    # Purified reals score high too (DIP output is smooth); the fakes still score higher.
    threshold, stats = fit_threshold([0.90, 0.92, 0.94], [0.99, 0.97, 0.98])
    assert threshold == pytest.approx(_sigmoid((_logit(0.94) + _logit(0.97)) / 2))
    assert (stats["real_right"], stats["fake_right"], stats["balanced_accuracy"]) == (1.0, 1.0, 1.0)
    assert (stats["n_real"], stats["n_fake"]) == (3, 3)


def test_fit_maximises_balanced_accuracy_not_plain_accuracy() -> None:
    # One real among the fakes. Cut between 0.2 and 0.5: reals 2/3, fakes 4/4 (balanced 0.833,
    # plain 6/7); between 0.6 and 0.8: reals 3/3, fakes 3/4 (balanced 0.875, plain 6/7).
    threshold, stats = fit_threshold([0.1, 0.2, 0.6], [0.5, 0.8, 0.9, 0.95])
    assert threshold == pytest.approx(_sigmoid((_logit(0.6) + _logit(0.8)) / 2))
    assert stats["balanced_accuracy"] == pytest.approx(0.875)
    # Tens of fakes against the same three reals do not move the cut to favour the fakes.
    threshold, _ = fit_threshold([0.1, 0.2, 0.6], [0.5] + [0.8, 0.9, 0.95] * 10)
    assert threshold == pytest.approx(_sigmoid((_logit(0.6) + _logit(0.8)) / 2))


def test_fit_needs_both_classes() -> None:
    with pytest.raises(ValueError):
        fit_threshold([], [0.5])


def test_scores_map_onto_the_card_scale_at_the_purified_cut() -> None:
    cal = PurifiedThreshold(0.97, "w" * 64, "cfg")
    card = 0.84
    mapped = cal.to_card_scale([0.5, 0.9699, 0.97, 0.9701, 0.999], card)
    assert mapped[2] == pytest.approx(card)
    says = [False, False, True, True, True]
    assert list(mapped >= card) == says == list(cal.says_fake([0.5, 0.9699, 0.97, 0.9701, 0.999]))
    assert np.all(np.diff(mapped) > 0)  # order kept
    assert np.all((mapped > 0) & (mapped < 1))


def test_save_load_and_the_tag_follows_the_rule(tmp_path: Path) -> None:
    cal = PurifiedThreshold(0.97, "a" * 64, "cfg1", {"n_real": 3})
    path = cal.save(tmp_path / PURIFY_FILENAME)
    assert PurifiedThreshold.load(path) == cal
    assert cal.tag() != PurifiedThreshold(0.96, "a" * 64, "cfg1").tag()
    assert cal.tag() != PurifiedThreshold(0.97, "a" * 64, "cfg2").tag()
    path.write_text('{"threshold": 0.5}')
    with pytest.raises(CheckpointError):
        PurifiedThreshold.load(path)
    with pytest.raises(ValueError):
        PurifiedThreshold(1.0, "a" * 64, "cfg1")


def test_load_for_ignores_a_file_of_other_weights_or_another_purifier_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert PurifiedThreshold.load_for(tmp_path, "a" * 64, "cfg1") is None  # no file: silently none
    cal = PurifiedThreshold(0.97, "a" * 64, "cfg1")
    cal.save(tmp_path / PURIFY_FILENAME)
    assert PurifiedThreshold.load_for(tmp_path, "a" * 64, "cfg1") == cal
    with caplog.at_level(logging.WARNING, logger="server.robust.purify_calibration"):
        assert PurifiedThreshold.load_for(tmp_path, "b" * 64, "cfg1") is None
        assert PurifiedThreshold.load_for(tmp_path, "a" * 64, "cfg2") is None
    first, second = (r.getMessage() for r in caplog.records)
    assert "ignoring" in first and "detector weights aaaaaaaaaaaa…, these are bbbbbbbbbbbb…" in first
    assert "purifier config cfg1, this one is cfg2" in second
    assert all("unmask purify fit" in m for m in (first, second))
