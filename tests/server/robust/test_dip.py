"""The DIP purifier: contracts, group independence, determinism, stopping rules, warm starts, denoising."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from server.robust.dip import DIPConfig, Purifier, WarmState
from server.robust.dip_fit import psnr

TINY = DIPConfig(size=32, channels=(8, 16), skip=(0, 4), max_iters=30, fixed_iter=30, group=4, check_every=5)
# Pinned: the idempotency key of stored purifications must not change by accident.
PAPER_VERSION = "94418aa24675"


def smooth(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` smooth colour images (n, 3, size, size) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=gen)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0.05, 0.95)


def mse_trace(log: dict[int, list[float]], target: torch.Tensor):
    """A ``trace`` callback recording each crop's MSE to ``target`` (at the fitting size)."""

    def trace(it: int, crops: list[int], images: torch.Tensor) -> None:
        for c, img in zip(crops, images, strict=True):
            log.setdefault(c, []).append(float((img - target[c]).square().mean()))

    return trace


class TestContracts:
    def test_shapes_range_and_dtype(self):
        crops = torch.rand(3, 3, 40, 36, dtype=torch.float64)
        result = Purifier(TINY).purify(crops)
        assert result.images.shape == crops.shape and result.images.dtype == torch.float64
        assert result.images.min() >= 0 and result.images.max() <= 1
        assert result.iterations == [30] * 3 and result.steps == [30] * 3
        assert result.stopped_by == ["fixed"] * 3
        assert result.seconds > 0 and len(result.state) == 3

    def test_empty_batch(self):
        result = Purifier(TINY).purify(torch.rand(0, 3, 32, 32))
        assert result.images.shape == (0, 3, 32, 32) and result.iterations == [] and result.state is None

    @pytest.mark.parametrize(
        "crops",
        [
            pytest.param(torch.rand(3, 32, 32), id="3d"),
            pytest.param(torch.rand(1, 1, 32, 32), id="gray"),
            pytest.param(torch.rand(1, 3, 32, 32) * 255, id="0-255"),
            pytest.param(torch.randint(0, 2, (1, 3, 32, 32)), id="int"),
        ],
    )
    def test_rejects_bad_crops(self, crops):
        with pytest.raises(ValueError):
            Purifier(TINY).purify(crops)

    def test_score_rule_needs_a_score_fn(self):
        with pytest.raises(ValueError, match="score_fn"):
            Purifier(TINY.replace(stop="score")).purify(torch.rand(1, 3, 32, 32))


class TestConfig:
    def test_paper_preset_is_the_papers(self):
        cfg = DIPConfig.paper()
        assert (cfg.size, cfg.channels, cfg.skip, cfg.input_channels) == (
            512,
            (8, 16, 32, 64, 128),
            (0, 0, 0, 4, 4),
            32,
        )
        assert (cfg.lr, cfg.input_noise, cfg.reg_noise_std, cfg.ema) == (0.01, 0.1, 1 / 30, 0.99)
        assert (cfg.stop, cfg.fixed_iter, cfg.max_iters, cfg.group) == ("fixed", 6000, 10_000, 1)

    def test_version_is_stable_and_tracks_every_field(self):
        assert DIPConfig.paper().version() == DIPConfig().version() == PAPER_VERSION
        versions = {
            DIPConfig.paper().replace(**{k: v}).version()
            for k, v in [("lr", 0.02), ("group", 2), ("stop", "eswmv")]
        }
        assert len(versions) == 3 and PAPER_VERSION not in versions
        assert len({DIPConfig.paper().version(), DIPConfig.fast().version(), DIPConfig.cpu().version()}) == 3

    @pytest.mark.parametrize(
        "changes",
        [
            pytest.param({"size": 34}, id="size-not-divisible"),
            pytest.param({"skip": (0,)}, id="levels-mismatch"),
            pytest.param({"stop": "never"}, id="unknown-rule"),
            pytest.param({"fixed_iter": None}, id="fixed-without-iter"),
            pytest.param({"fixed_iter": 31}, id="fixed-after-max"),
            pytest.param({"min_iters": 40}, id="min-above-max"),
            pytest.param({"dtype": "float16"}, id="dtype"),
            pytest.param({"prefilter": "nlmeans"}, id="prefilter"),
            pytest.param({"ema": 1.0}, id="ema"),
            pytest.param({"group": 0}, id="group"),
        ],
    )
    def test_rejects_invalid_settings(self, changes):
        with pytest.raises(ValueError):
            TINY.replace(**changes)


class TestGrouping:
    def test_grouped_result_equals_each_crop_alone(self):
        crops = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        cfg = TINY.replace(dtype="float64")
        together = Purifier(cfg).purify(crops, generator_seed=7)
        for i in range(3):
            alone = Purifier(cfg.replace(group=1)).purify(crops[i : i + 1], generator_seed=7)
            torch.testing.assert_close(together.images[i : i + 1], alone.images, rtol=0, atol=1e-9)

    def test_compaction_and_several_groups_change_nothing(self):
        # ES-WMV stops crops at different iterations, so the group shrinks while the rest fits on.
        crops = torch.cat(
            [smooth(2, 32), torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))]
        )
        cfg = TINY.replace(
            dtype="float64", stop="eswmv", fixed_iter=None, window=4, patience=4, max_iters=60, check_every=2
        )
        grouped = Purifier(cfg).purify(crops)
        alone = Purifier(cfg.replace(group=1)).purify(crops)
        assert len(set(grouped.steps)) > 1
        assert grouped.steps == alone.steps and grouped.iterations == alone.iterations
        torch.testing.assert_close(grouped.images, alone.images, rtol=0, atol=1e-9)
        for name, p in grouped.state.params.items():
            torch.testing.assert_close(p, alone.state.params[name], rtol=0, atol=1e-9)

    def test_same_seed_same_result_other_seed_other_result(self):
        crops = smooth(2, 32)
        a = Purifier(TINY).purify(crops, generator_seed=3).images
        b = Purifier(TINY).purify(crops, generator_seed=3).images
        c = Purifier(TINY).purify(crops, generator_seed=4).images
        assert torch.equal(a, b) and not torch.allclose(a, c)


class TestStopping:
    def test_fixed_stops_exactly_at_fixed_iter(self):
        result = Purifier(TINY.replace(fixed_iter=17, check_every=5)).purify(smooth(2, 32))
        assert result.iterations == [17, 17] and result.steps == [17, 17]

    def test_eswmv_stops_before_max_iters_on_a_smooth_target(self):
        cfg = TINY.replace(stop="eswmv", fixed_iter=None, window=5, patience=10, max_iters=300, ema=0.5)
        result = Purifier(cfg).purify(smooth(2, 32))
        assert result.stopped_by == ["eswmv", "eswmv"]
        assert all(s < 300 for s in result.steps)
        assert all(s - i >= 10 for s, i in zip(result.steps, result.iterations, strict=True))

    def test_eswmv_returns_best_so_far_at_max_iters(self):
        cfg = TINY.replace(stop="eswmv", fixed_iter=None, window=5, patience=1000)
        result = Purifier(cfg).purify(smooth(1, 32))
        assert result.stopped_by == ["max_iters"] and result.steps == [30] and 5 <= result.iterations[0] <= 30

    def test_score_rule_stops_when_the_detector_settles(self):
        seen: list[tuple[int, ...]] = []

        def score_fn(images: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(images.shape))
            m = images.mean(dim=(1, 2, 3))
            return torch.stack([m, -m], dim=1)

        cfg = TINY.replace(
            stop="score", fixed_iter=None, score_every=10, score_delta=0.02, score_patience=2, max_iters=300
        )
        result = Purifier(cfg).purify(smooth(2, 32), score_fn=score_fn, score_size=(24, 24))
        assert result.stopped_by == ["score", "score"] and all(s < 300 for s in result.steps)
        assert all(s % 10 == 0 for s in result.steps) and all(0 <= p <= 1 for p in result.scores)
        assert seen[0] == (2, 3, 24, 24)

    def test_min_iters_holds_rules_back(self):
        cfg = TINY.replace(stop="eswmv", fixed_iter=None, window=3, patience=2, min_iters=25)
        assert all(s >= 25 for s in Purifier(cfg).purify(smooth(2, 32)).steps)


class TestWarmStart:
    def test_warm_start_reaches_the_cold_error_in_fewer_iterations(self):
        frames = smooth(2, 34, seed=5)
        first, second = frames[:1, :, :32, :32], frames[:1, :, 2:, 2:]  # the face moved by 2 px
        cfg = TINY.replace(max_iters=80, fixed_iter=80, ema=0.0, check_every=1, warm_max_iters=80)
        purifier = Purifier(cfg)
        state = purifier.purify(first).state
        cold: dict[int, list[float]] = {}
        warm: dict[int, list[float]] = {}
        purifier.purify(second, trace=mse_trace(cold, second))
        purifier.purify(second, warm=state, trace=mse_trace(warm, second))
        goal = cold[0][-1]
        warm_hit = next(i for i, e in enumerate(warm[0], start=1) if e <= goal)
        assert warm_hit <= len(cold[0]) // 2

    def test_warm_start_uses_the_warm_limits(self):
        cfg = TINY.replace(warm_max_iters=12)
        purifier = Purifier(cfg)
        state = purifier.purify(smooth(2, 32)).state
        assert purifier.purify(smooth(2, 32, seed=1), warm=state).iterations == [12, 12]

    def test_warm_state_select_and_mismatch(self):
        state = Purifier(TINY).purify(smooth(3, 32)).state
        one = state.select([2])
        assert len(one) == 1 and isinstance(one, WarmState)
        assert torch.equal(one.noise[0], state.noise[2])
        with pytest.raises(ValueError, match="warm"):
            Purifier(TINY).purify(smooth(2, 32), warm=one)
        with pytest.raises(ValueError, match="warm"):
            Purifier(TINY.replace(size=64)).purify(smooth(1, 32), warm=one)


class TestPurification:
    def test_removes_high_frequency_adversarial_like_noise(self):
        # Crop size = fitting size and no prefilter: the gain is the network's, not a resize's.
        clean = smooth(1, 64, seed=3)
        noise = (torch.rand(clean.shape, generator=torch.Generator().manual_seed(9)) * 2 - 1) * 0.03
        noisy = (clean + noise).clamp(0, 1)
        cfg = DIPConfig.cpu().replace(prefilter="none", fixed_iter=150, max_iters=150)
        result = Purifier(cfg).purify(noisy)
        assert psnr(result.images, clean) > psnr(noisy, clean) + 1.0

    def test_trace_sees_batch_indices_across_groups(self):
        seen: set[int] = set()
        Purifier(TINY.replace(group=2)).purify(smooth(3, 32), trace=lambda it, crops, _: seen.update(crops))
        assert seen == {0, 1, 2}


def test_psnr_helper():
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x, x) == math.inf
    assert psnr(x, x + 0.1) == pytest.approx(20.0)
