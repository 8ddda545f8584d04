"""Deep Image Prior purification of face crops: the paper's defence, and a fast batched default.

Gandhi & Jain (arXiv:2003.10596) fit a randomly initialised skip network to each perturbed image
for 10,000 Adam steps at 512x512 and classify the output at iteration 6,000. ``DIPConfig.paper()``
is that configuration. ``DIPConfig.fast()`` fits many crops at once as independent grouped
networks (``server.robust.dip_nets``) in bf16 on the GPU and stops each crop by ES-WMV
(``server.robust.dip_stop``); ``DIPConfig.cpu()`` bounds the time on a CPU with a small
resolution, a small network and a bilateral prefilter. A ``WarmState`` carries each crop's network
to the next frame of the same face.

Example:
    >>> purifier = Purifier(DIPConfig.fast(), device="cuda")
    >>> result = purifier.purify(crops, score_fn=detector.pixel_model())
    >>> again = purifier.purify(next_crops, warm=result.state)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from server.robust.attacks.base import check_images
from server.robust.dip_fit import GroupFit, Limits, TraceFn
from server.robust.dip_nets import init_params
from server.robust.dip_prefilter import PREFILTERS, prefilter, resize

# Bump when the algorithm changes in a way that changes outputs for the same config.
ALGO_VERSION = "dip-1"
STOP_RULES = ("fixed", "eswmv", "score")
DTYPES = ("float32", "bfloat16", "float64")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DIPConfig:
    """Every setting of a purification; the defaults are the paper's (``DIPConfig.paper()``)."""

    size: int = 512  # side the crop is resized to for fitting
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)  # down/up channels per level (DIP "JPEG" config)
    skip: tuple[int, ...] = (0, 0, 0, 4, 4)  # skip channels per level
    input_channels: int = 32
    input_noise: float = 0.1  # z ~ U(0, 1) * 0.1
    reg_noise_std: float = 1 / 30  # fresh N(0, σ²) added to z every iteration
    lr: float = 0.01
    max_iters: int = 10_000
    min_iters: int = 0
    stop: str = "fixed"  # "fixed" | "eswmv" | "score"
    fixed_iter: int | None = 6000
    window: int = 100  # ES-WMV window W
    patience: int = 1000  # ES-WMV: iterations without a new variance minimum
    ema: float = 0.99  # exponential average of the outputs; 0 returns raw outputs
    group: int = 1  # crops fitted at once as grouped networks
    dtype: str = (
        "float32"  # "bfloat16" autocasts the network on CUDA (CPU runs float32); "float64" for checks
    )
    prefilter: str = "none"  # classical denoiser applied to the crop first
    check_every: int = 1  # iterations between host-side decisions (each one syncs the GPU)
    variance_size: int = 64  # ES-WMV compares outputs downsampled to this side
    score_every: int = 50  # "score" rule: iterations between detector passes
    score_delta: float = 0.02  # "score" rule: max change of P(fake) between checks to count as stable
    score_patience: int = 4  # "score" rule: consecutive stable checks
    warm_min_iters: int = 0  # min/max iterations when a warm start is given
    warm_max_iters: int = 10_000
    rollback_db: float | None = 5.0  # restore the last checkpoint when the fit's PSNR drops this much
    compile: str = "none"  # torch.compile mode for the network, or "none"
    channels_last: bool = True  # faster convolutions on CPU (measured 0.12 vs 0.17 s/iter at 256²)

    def __post_init__(self) -> None:
        levels = len(self.channels)
        if levels == 0 or len(self.skip) != levels:
            raise ValueError(f"channels and skip need one entry per level, got {self.channels}, {self.skip}")
        if self.size < 2**levels or self.size % 2**levels:
            raise ValueError(f"size must be a multiple of 2**levels = {2**levels}, got {self.size}")
        if self.stop not in STOP_RULES:
            raise ValueError(f"stop must be one of {STOP_RULES}, got {self.stop!r}")
        if self.stop == "fixed" and (self.fixed_iter is None or not 1 <= self.fixed_iter <= self.max_iters):
            raise ValueError("stop='fixed' needs 1 <= fixed_iter <= max_iters")
        if not 0 <= self.min_iters <= self.max_iters or not 0 <= self.warm_min_iters <= self.warm_max_iters:
            raise ValueError("need 0 <= min_iters <= max_iters and 0 <= warm_min_iters <= warm_max_iters")
        if self.dtype not in DTYPES or self.prefilter not in PREFILTERS or self.compile not in COMPILE_MODES:
            raise ValueError(
                f"bad dtype/prefilter/compile: {self.dtype!r}, {self.prefilter!r}, {self.compile!r}"
            )
        if not 0 <= self.ema < 1 or self.group < 1 or self.check_every < 1 or self.score_every < 1:
            raise ValueError("need 0 <= ema < 1 and group, check_every, score_every >= 1")

    @classmethod
    def paper(cls) -> DIPConfig:
        """Gandhi & Jain: 512², the DIP JPEG skip net, Adam 0.01, one image at a time, output at 6,000."""
        return cls()

    @classmethod
    def fast(cls) -> DIPConfig:
        """GPU default: the paper's network at 256², 64 crops per launch in bf16, ES-WMV stopping."""
        # Measured on an H100 (2026-11-27, docs/BENCHMARKS.md): 1.4-1.6 ms per iteration per crop in
        # groups of 48-64, and ES-WMV did not fire before 2,000 iterations; along those fits the
        # held-out rates stopped changing at 1,000 (restore 75 %, others 100 % from 1,000 to
        # 2,000), so the budget ends there at half the cost.
        return cls(
            size=256,
            group=64,
            dtype="bfloat16",
            stop="eswmv",
            fixed_iter=None,
            window=50,
            patience=300,
            min_iters=300,
            max_iters=1000,
            check_every=25,
            warm_min_iters=100,
            warm_max_iters=1000,
        )

    @classmethod
    def cpu(cls) -> DIPConfig:
        """CPU path: bilateral prefilter, 64², a 4-level 8–64-channel net with skips everywhere, 300 steps."""
        # Skips at every level fit 64² in ~150 steps instead of ~300 (measured on smooth + ±0.03 noise);
        # a lighter output average (0.9) stops the 100-step lag of 0.99 eating a third of the budget.
        return cls(
            size=64,
            channels=(8, 16, 32, 64),
            skip=(4, 4, 4, 4),
            prefilter="bilateral",
            group=4,
            ema=0.9,
            fixed_iter=300,
            max_iters=300,
            check_every=25,
            warm_max_iters=150,
        )

    def replace(self, **changes: object) -> DIPConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def compute_dtype(self) -> torch.dtype:
        """Weights, targets and outputs: float64 only when asked for (reference checks), else float32."""
        return torch.float64 if self.dtype == "float64" else torch.float32

    def net_key(self) -> str:
        """What a warm start must share with the config: the network and the fitting size."""
        return f"{self.size}:{self.channels}:{self.skip}:{self.input_channels}"

    def version(self) -> str:
        """Stable short hash of every field and ``ALGO_VERSION``: the idempotency key of a purification."""
        blob = json.dumps({"algo": ALGO_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class WarmState:
    """Per-crop network weights ``params[name]`` (B, *shape) and input noise (B, C, S, S) after a purify."""

    params: dict[str, torch.Tensor]
    noise: torch.Tensor
    net_key: str

    def __len__(self) -> int:
        return self.noise.shape[0]

    def select(self, indices: list[int] | torch.Tensor) -> WarmState:
        """The states of the crops at ``indices`` (e.g. the faces that continue into the next frame)."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.noise.device)
        return WarmState({k: v[idx] for k, v in self.params.items()}, self.noise[idx], self.net_key)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> WarmState:
        """A copy on ``device`` (and in ``dtype`` when given)."""
        params = {k: v.to(device, dtype) for k, v in self.params.items()}
        return WarmState(params, self.noise.to(device, dtype), self.net_key)


@dataclass
class PurifyResult:
    """Purified crops and how each one stopped."""

    images: torch.Tensor  # (B, 3, H, W) in [0, 1], same size, dtype and device as the input crops
    iterations: list[int]  # per crop: the iteration whose output is returned
    stopped_by: list[str]  # per crop: "eswmv" | "score" | "fixed" | "max_iters"
    seconds: float
    state: WarmState | None
    steps: list[int] = dataclasses.field(default_factory=list)  # per crop: optimiser steps it cost
    scores: list[float | None] = dataclasses.field(default_factory=list)  # last P(fake) of the score rule


class Purifier:
    """Purify (B, 3, H, W) crops in [0, 1] with the Deep Image Prior of ``config`` on ``device``."""

    def __init__(self, config: DIPConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)

    def purify(
        self,
        crops: torch.Tensor,
        *,
        score_fn: ScoreFn | None = None,
        warm: WarmState | None = None,
        generator_seed: int = 0,
        score_size: tuple[int, int] | None = None,
        trace: TraceFn | None = None,
    ) -> PurifyResult:
        """Fit one network per crop and return each crop's output where its stopping rule fired.

        ``score_fn`` maps [0, 1] RGB (n, 3, h, w) to logits (n, 2), index 1 = fake; the "score"
        rule needs it and feeds it the smoothed output resized to ``score_size`` (default: the
        crops' own size). ``warm`` (one entry per crop) starts from earlier weights and uses the
        ``warm_*`` iteration limits. ``trace(iteration, crop_indices, outputs)`` sees the
        outputs at every decision point (for plots of the optimisation path). Every crop starts
        from the same seeded weights and noise, so a crop's result does not depend on which other
        crops share its group (up to float rounding, which DIP's chaotic fit amplifies).
        """
        cfg = self.config
        check_images(crops)
        if cfg.stop == "score" and score_fn is None:
            raise ValueError("stop='score' needs a score_fn")
        if warm is not None and (len(warm) != crops.shape[0] or warm.net_key != cfg.net_key()):
            raise ValueError("warm state does not match these crops or this config's network")
        started = time.perf_counter()
        n, h, w = crops.shape[0], crops.shape[-2], crops.shape[-1]
        x = prefilter(crops.detach().to(self.device, cfg.compute_dtype).clamp(0, 1), cfg.prefilter)
        target = resize(x, (cfg.size, cfg.size)).clamp(0, 1)
        limits = self._limits(warm is not None)
        params, noise = self._start(n, warm, generator_seed)
        outs, parts = [], []
        for lo in range(0, n, cfg.group):
            sl = slice(lo, lo + cfg.group)
            fit = GroupFit(cfg, self.device, limits, score_fn, score_size or (h, w), _offset(trace, lo))
            part = fit.run(target[sl], {k: v[sl] for k, v in params.items()}, noise[sl], generator_seed)
            outs.append(part.images)
            parts.append(part)
        images = resize(torch.cat(outs) if outs else target, (h, w)).clamp(0, 1)
        state = None
        if parts:
            state = WarmState(
                {k: torch.cat([p.params[k] for p in parts]) for k in parts[0].params},
                torch.cat([p.noise for p in parts]),
                cfg.net_key(),
            )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return PurifyResult(
            images=images.to(crops.device, crops.dtype),
            iterations=[i for p in parts for i in p.iterations],
            stopped_by=[s for p in parts for s in p.stopped_by],
            seconds=time.perf_counter() - started,
            state=state,
            steps=[s for p in parts for s in p.steps],
            scores=[s for p in parts for s in p.scores],
        )

    def _limits(self, warm: bool) -> Limits:
        cfg = self.config
        lo, hi = (cfg.warm_min_iters, cfg.warm_max_iters) if warm else (cfg.min_iters, cfg.max_iters)
        fixed = None if cfg.fixed_iter is None else min(cfg.fixed_iter, hi)
        return Limits(min_iters=lo, max_iters=hi, fixed_iter=fixed)

    def _start(
        self, n: int, warm: WarmState | None, seed: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-crop starting weights (B, *shape) and input noise (B, C, S, S) on the device."""
        cfg = self.config
        if warm is not None:
            warm = warm.to(self.device, cfg.compute_dtype)
            return warm.params, warm.noise
        one = init_params(cfg.channels, cfg.skip, cfg.input_channels, seed)
        dtype = cfg.compute_dtype
        params = {k: v.to(self.device, dtype).unsqueeze(0).expand(n, *v.shape) for k, v in one.items()}
        gen = torch.Generator().manual_seed(seed)
        z = torch.rand(cfg.input_channels, cfg.size, cfg.size, generator=gen) * cfg.input_noise
        return params, z.to(self.device, dtype).unsqueeze(0).expand(n, *z.shape)


def _offset(trace: TraceFn | None, lo: int) -> TraceFn | None:
    """``trace`` seeing crop indices of the whole batch instead of the group's."""
    if trace is None:
        return None
    return lambda it, crops, images: trace(it, [lo + c for c in crops], images)
