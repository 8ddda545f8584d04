"""ES-WMV windowed variance and detector-score stability, on hand-made output sequences."""

from __future__ import annotations

import pytest
import torch

from server.robust.dip_stop import ScoreStability, WindowedVariance

CPU = torch.device("cpu")


def frames(n: int, amplitude: float, seed: int) -> list[torch.Tensor]:
    """``n`` (2, 3, 8, 8) outputs jittering around 0.5 by ``amplitude``."""
    gen = torch.Generator().manual_seed(seed)
    return [0.5 + amplitude * torch.randn(2, 3, 8, 8, generator=gen) for _ in range(n)]


def test_no_decision_until_the_window_fills():
    rule = WindowedVariance(2, window=4, patience=3, size=8, device=CPU)
    results = [rule.update(i, f) for i, f in enumerate(frames(4, 0.1, 0), start=1)]
    assert results[:3] == [None, None, None]
    assert results[3] is not None and results[3].all()
    assert rule.best_iter.tolist() == [4, 4]


def test_minimum_sits_in_the_calm_phase_and_fires_after_patience():
    # Fitting (large changes) → calm (near peak) → fitting the noise (changes again).
    seq = frames(10, 0.2, 0) + frames(10, 0.001, 1) + frames(30, 0.2, 2)
    rule = WindowedVariance(2, window=5, patience=8, size=8, device=CPU)
    fired_at = None
    for i, f in enumerate(seq, start=1):
        rule.update(i, f)
        if fired_at is None and rule.fired(i).all():
            fired_at = i
    assert all(15 <= b <= 20 for b in rule.best_iter.tolist())
    assert fired_at == int(rule.best_iter.max()) + 8


def test_outputs_are_downsampled_to_the_comparison_size():
    rule = WindowedVariance(1, window=2, patience=1, size=4, device=CPU)
    rule.update(1, torch.rand(1, 3, 16, 16))
    assert rule.buffer.shape == (1, 2, 3 * 4 * 4)


def test_select_keeps_the_chosen_networks():
    rule = WindowedVariance(3, window=2, patience=1, size=8, device=CPU)
    for i, f in enumerate(frames(3, 0.1, 0), start=1):
        rule.update(i, torch.cat([f, f[:1]]))
    rule.select(torch.tensor([0, 2]))
    assert rule.buffer.shape[0] == rule.best_var.shape[0] == rule.best_iter.shape[0] == 2
    assert rule.best_var[0] == rule.best_var[1]


@pytest.mark.parametrize(("window", "patience"), [(1, 5), (4, 0)])
def test_window_variance_rejects_bad_settings(window, patience):
    with pytest.raises(ValueError):
        WindowedVariance(1, window=window, patience=patience, size=8, device=CPU)


def test_score_stability_counts_consecutive_stable_checks():
    rule = ScoreStability(2, delta=0.05, patience=2, device=CPU)
    for p in ([0.9, 0.9], [0.5, 0.88], [0.52, 0.2], [0.53, 0.21]):
        rule.update(torch.tensor(p))
    assert rule.streak.tolist() == [2, 1]
    assert rule.fired().tolist() == [True, False]
    rule.select(torch.tensor([1]))
    assert rule.streak.tolist() == [1]


def test_first_score_check_is_never_stable():
    rule = ScoreStability(1, delta=1.0, patience=1, device=CPU)
    rule.update(torch.tensor([0.5]))
    assert not rule.fired().any()
    rule.update(torch.tensor([0.5]))
    assert rule.fired().all()


def test_score_stability_rejects_bad_settings():
    with pytest.raises(ValueError):
        ScoreStability(1, delta=-0.1, patience=1, device=CPU)
