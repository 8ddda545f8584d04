"""The fitting loop behind ``server.robust.dip.Purifier``: one group of crops, one grouped network.

Every iteration runs on the device (forward, loss, Adam, output average, ES-WMV update); the host
decides only every ``check_every`` iterations. A crop whose rule fired keeps the output it
stopped with; when half of a group has stopped, the group is compacted to the crops still
fitting (weights and Adam moments are sliced, so nothing changes for them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from server.robust.dip_nets import SkipNet, stacked_to_grouped
from server.robust.dip_prefilter import resize
from server.robust.dip_stop import ScoreStability, WindowedVariance

if TYPE_CHECKING:
    from server.robust.dip import DIPConfig

ADAM_KEYS = ("exp_avg", "exp_avg_sq")

# Called at every decision point with (iteration, crop indices in the group, their current outputs).
TraceFn = Callable[[int, list[int], torch.Tensor], None]


@dataclass(frozen=True)
class Limits:
    """Iteration limits of one purify call (cold or warm)."""

    min_iters: int
    max_iters: int
    fixed_iter: int | None


@dataclass
class FitPart:
    """Per-crop results of one group."""

    images: torch.Tensor  # (g, 3, S, S)
    params: dict[str, torch.Tensor]  # (g, *shape) weights when the crop stopped
    noise: torch.Tensor  # (g, C, S, S)
    iterations: list[int] = field(default_factory=list)
    stopped_by: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)


@dataclass
class _Live:
    """Per-position tensors of the crops a group is still fitting (positions shift on compaction)."""

    slots: list[int]  # position → crop index within the part
    z: torch.Tensor
    tgt: torch.Tensor
    ema: torch.Tensor | None = None
    best: torch.Tensor | None = None  # ES-WMV: output kept at the variance minimum
    last_psnr: torch.Tensor | None = None
    probs: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> None:
        """Keep the positions ``keep`` (a device index tensor)."""
        self.slots = [self.slots[k] for k in keep.tolist()]
        for name in ("z", "tgt", "ema", "best", "last_psnr", "probs"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[keep])


def _take(t: torch.Tensor, groups: int, keep: torch.Tensor) -> torch.Tensor:
    """Rows of the networks at ``keep`` from a grouped tensor (groups*k, ...)."""
    return t.view(groups, -1, *t.shape[1:])[keep].reshape(-1, *t.shape[1:])


def _group_mask(mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A per-network (g,) mask broadcast over a grouped tensor (g*k, ...)."""
    return mask.repeat_interleave(t.shape[0] // mask.shape[0]).view(-1, *([1] * (t.ndim - 1)))


class GroupFit:
    """Fits groups of crops with one configuration; ``run`` handles one group."""

    def __init__(
        self,
        cfg: DIPConfig,
        device: torch.device,
        limits: Limits,
        score_fn: Callable[[torch.Tensor], torch.Tensor] | None,
        score_size: tuple[int, int],
        trace: TraceFn | None = None,
    ) -> None:
        self.cfg, self.device, self.limits = cfg, device, limits
        self.score_fn, self.score_size = score_fn, score_size
        self.trace = trace
        use_bf16 = device.type == "cuda" and cfg.dtype == "bfloat16"
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    def _build(self, params: dict[str, torch.Tensor], groups: int) -> tuple[nn.Module, torch.optim.Adam]:
        cfg = self.cfg
        with torch.device("meta"):
            net = SkipNet(cfg.channels, cfg.skip, cfg.input_channels, groups=groups)
        net = net.to_empty(device=self.device).to(cfg.compute_dtype)
        grouped = stacked_to_grouped(params)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(grouped[name])
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        kind = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, **kind)
        return net, opt

    def _forward(self, net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return net if self.cfg.compile == "none" else torch.compile(net, mode=self.cfg.compile)

    def _score(self, images: torch.Tensor) -> torch.Tensor:
        assert self.score_fn is not None
        with torch.no_grad():
            logits = self.score_fn(resize(images.float(), self.score_size).clamp(0, 1))
        return logits.float().softmax(dim=-1)[:, 1]

    def run(
        self, target: torch.Tensor, params: dict[str, torch.Tensor], noise: torch.Tensor, seed: int
    ) -> FitPart:
        """Fit one network per crop of ``target`` (g, 3, S, S) from ``params``/``noise``; per-crop results."""
        cfg, lim, dev = self.cfg, self.limits, self.device
        g, size = target.shape[0], target.shape[-1]
        part = FitPart(
            images=torch.empty_like(target),
            params={k: torch.empty(g, *v.shape[1:], device=dev, dtype=v.dtype) for k, v in params.items()},
            noise=noise.clone(),
        )
        part.iterations, part.stopped_by, part.steps, part.scores = [0] * g, [""] * g, [0] * g, [None] * g
        net, opt = self._build(params, g)
        forward = self._forward(net)
        live = _Live(slots=list(range(g)), z=noise.contiguous(), tgt=target.contiguous())
        alive = torch.ones(g, dtype=torch.bool)
        # Reg noise is drawn once per iteration and shared by all crops: one small draw per launch,
        # and a crop's noise stream does not depend on its neighbours.
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        eswmv = (
            WindowedVariance(g, cfg.window, cfg.patience, min(cfg.variance_size, size), dev)
            if cfg.stop == "eswmv"
            else None
        )
        stable = ScoreStability(g, cfg.score_delta, cfg.score_patience, dev) if cfg.stop == "score" else None
        ckpt = [p.detach().clone() for p in net.parameters()] if cfg.rollback_db else None
        for it in range(1, lim.max_iters + 1):
            cur_g = len(live.slots)
            draw = torch.randn((1, 1, *live.z.shape[1:]), generator=gen, device=dev)
            inp = (live.z.unsqueeze(0) + cfg.reg_noise_std * draw).view(1, -1, size, size)
            if cfg.channels_last:
                inp = inp.contiguous(memory_format=torch.channels_last)
            with self.autocast:
                out = forward(inp)
            out = out.to(live.tgt.dtype).view(cur_g, 3, size, size)
            err = (out - live.tgt).square().flatten(1).mean(dim=1)
            opt.zero_grad(set_to_none=True)
            err.sum().backward()
            deciding = (
                it % cfg.check_every == 0
                or it == lim.max_iters
                or it == lim.fixed_iter
                or (stable is not None and it % cfg.score_every == 0)
            )
            if deciding and ckpt is not None:
                live.last_psnr = self._rollback(net, ckpt, err.detach(), live.last_psnr)
            opt.step()
            out = out.detach()
            live.ema = out.clone() if live.ema is None else torch.lerp(out, live.ema, cfg.ema)
            cur = live.ema if cfg.ema > 0 else out
            if eswmv is not None:
                improved = eswmv.update(it, out)
                if live.best is None:
                    live.best = cur.clone()
                elif improved is not None:
                    live.best = torch.where(improved.view(-1, 1, 1, 1), cur, live.best)
            if not deciding:
                continue
            if self.trace is not None:
                self.trace(it, list(live.slots), cur)
            if stable is not None and it % cfg.score_every == 0:
                live.probs = self._score(cur)
                stable.update(live.probs)
            stop, why = self._fired(it, cur_g, eswmv, stable)
            for pos in torch.nonzero(stop & alive).flatten().tolist():
                best_iter = int(eswmv.best_iter[pos]) if eswmv is not None else -1
                self._record(part, live, net, pos, it, why[pos], cur, best_iter)
                alive[pos] = False
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if n_alive <= cur_g // 2:
                keep = torch.nonzero(alive).flatten().to(dev)
                net, opt, ckpt = self._compact(net, opt, ckpt, cur_g, keep)
                forward = self._forward(net)
                live.select(keep)
                alive = torch.ones(len(live.slots), dtype=torch.bool)
                for rule in (eswmv, stable):
                    if rule is not None:
                        rule.select(keep)
        return part

    @staticmethod
    def _record(
        part: FitPart,
        live: _Live,
        net: nn.Module,
        pos: int,
        it: int,
        why: str,
        cur: torch.Tensor,
        best_iter: int,
    ) -> None:
        """Freeze the result of the crop at ``pos``: its output, where it stopped, its weights."""
        crop, cur_g = live.slots[pos], len(live.slots)
        take_best = live.best is not None and best_iter >= 0
        part.images[crop] = (live.best if take_best else cur)[pos]
        part.iterations[crop] = best_iter if take_best else it
        part.stopped_by[crop] = why
        part.steps[crop] = it
        part.scores[crop] = None if live.probs is None else float(live.probs[pos])
        for name, p in net.named_parameters():
            part.params[name][crop] = p.detach().view(cur_g, -1, *p.shape[1:])[pos]

    def _fired(
        self, it: int, cur_g: int, eswmv: WindowedVariance | None, stable: ScoreStability | None
    ) -> tuple[torch.Tensor, list[str]]:
        """Which positions stop now (a host mask) and why."""
        lim = self.limits
        if self.cfg.stop == "fixed" and it == lim.fixed_iter:
            return torch.ones(cur_g, dtype=torch.bool), ["fixed"] * cur_g
        fired, why = torch.zeros(cur_g, dtype=torch.bool), ""
        if it >= lim.min_iters and eswmv is not None:
            fired, why = eswmv.fired(it).cpu(), "eswmv"
        elif it >= lim.min_iters and stable is not None:
            fired, why = stable.fired().cpu(), "score"
        if it == lim.max_iters:
            return torch.ones(cur_g, dtype=torch.bool), [why if f else "max_iters" for f in fired.tolist()]
        return fired, [why] * cur_g

    def _rollback(
        self,
        net: nn.Module,
        ckpt: list[torch.Tensor],
        err: torch.Tensor,
        last_psnr: torch.Tensor | None,
    ) -> torch.Tensor:
        """The DIP repo's guard: a network whose fit PSNR fell by more than ``rollback_db`` goes back."""
        psnr = -10 * torch.log10(err.clamp_min(1e-10))
        assert self.cfg.rollback_db is not None
        drop = torch.zeros_like(psnr, dtype=torch.bool)
        if last_psnr is not None:
            drop = psnr - last_psnr < -self.cfg.rollback_db
        with torch.no_grad():
            for p, saved in zip(net.parameters(), ckpt, strict=True):
                mask = _group_mask(drop, p)
                p.copy_(torch.where(mask, saved, p))
                saved.copy_(torch.where(mask, saved, p))
        return psnr if last_psnr is None else torch.where(drop, last_psnr, psnr)

    def _compact(
        self,
        net: nn.Module,
        opt: torch.optim.Adam,
        ckpt: list[torch.Tensor] | None,
        groups: int,
        keep: torch.Tensor,
    ) -> tuple[nn.Module, torch.optim.Adam, list[torch.Tensor] | None]:
        """A smaller grouped network and optimiser holding only the networks at ``keep``."""
        stacked = {
            name: _take(p.detach(), groups, keep).view(len(keep), -1, *p.shape[1:])
            for name, p in net.named_parameters()
        }
        new_net, new_opt = self._build(stacked, len(keep))
        for old, new in zip(net.parameters(), new_net.parameters(), strict=True):
            state = opt.state.get(old)
            if state:
                new_opt.state[new] = {"step": state["step"].clone()} | {
                    key: torch.empty_like(new).copy_(_take(state[key], groups, keep)) for key in ADAM_KEYS
                }
        if ckpt is not None:
            ckpt = [_take(c, groups, keep) for c in ckpt]
        return new_net, new_opt, ckpt


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] images (or batches)."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)
