"""Detector training: ``train(TrainConfig) -> run_dir``.

Data is an image folder (``real/``, ``fake/``, as the paper used), a video folder of the same
layout (face crops per sampled frame), or real-only faces turned into self-blended
pseudo-fakes. Options: social-media augmentations, the paper's Lipschitz penalty, PGD
adversarial training, mixed precision on GPU. A run is seeded, resumable from ``last.pt``,
and ends in a checkpoint directory (card.json + model.safetensors) with metrics.json and
train.log; the model is temperature-calibrated and thresholded on the validation split.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from server.errors import ConfigError
from server.robust.lipschitz import lipschitz_penalty
from server.vision.augment import AugmentConfig
from server.vision.calibration import apply_calibration, fit_temperature
from server.vision.card import LABELS, ModelCard
from server.vision.checkpoint import load_checkpoint, save_checkpoint
from server.vision.datasets import SBI_LABEL, CropDataset, Item, load_items, split_by_group, with_sbi
from server.vision.detector import PixelModel, resolve_device
from server.vision.evaluate import DEFAULT_TARGET_FPR, compute_metrics
from server.vision.registry import arch_defaults, create_model

_LOG = logging.getLogger(__name__)
ADV_MODES = ("none", "pgd")
RESUME_FILE = "last.pt"
WARMUP_FRACTION = 0.05  # of all steps; a short linear warm-up keeps Adam's first steps sane
# Keep decoded crops in memory below this many bytes (a 128 px crop is 48 KiB): re-reading
# PNGs every epoch costs more than training the tiny model on them.
CACHE_BYTES = 2 << 30


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in the run's metrics.json and last.pt."""

    data: str | Path
    out: str | Path = "runs/train"
    real_only: bool = False  # data holds only real faces: fakes are self-blended on the fly
    val_data: str | Path | None = None  # else ``val_fraction`` of the groups (videos) of ``data``
    val_fraction: float = 0.2
    sbi_ratio: float = 0.0  # extra self-blended pseudo-fakes per real training crop
    arch: str = "unmask_tiny"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    # Fine-tune: start from this checkpoint directory's weights (same architecture) instead of
    # a fresh initialisation; the run is still calibrated and thresholded on its own validation.
    init: str | Path | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    lipschitz_lambda: float = 0.0  # 0 = off; the paper used 5–5000 with a per-pixel mean
    # Samples per batch the penalty is estimated on (None = all): double back-propagation costs
    # about 3 forward/backward passes per sample, and the penalty is a batch mean anyway.
    lipschitz_batch: int | None = None
    adv_train: str = "none"  # "none" | "pgd"
    adv_eps: float = 4 / 255
    adv_steps: int = 3
    adv_fraction: float = 0.5  # share of each batch replaced by its adversarial version
    amp: bool = False  # bfloat16 autocast, GPU only
    device: str = "auto"
    threads: int | None = None
    resume: bool = False
    max_steps: int | None = None  # stop early (tests, smoke runs)
    target_fpr: float = DEFAULT_TARGET_FPR
    calibrate: bool = True
    frame_every: int = 2  # video folders: one crop per this many frames
    model_id: str | None = None
    version: str = "1"
    demo: bool = False
    training_data: str = ""
    notes: str = ""
    progress: bool = True
    log_every: int = 20

    def __post_init__(self) -> None:
        """Reject settings that cannot train."""
        if self.adv_train not in ADV_MODES:
            raise ConfigError(f"adv_train must be one of {ADV_MODES}, got {self.adv_train!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")
        if not 0 <= self.val_fraction < 1 or self.sbi_ratio < 0 or self.lipschitz_lambda < 0:
            raise ConfigError("val_fraction must be in [0, 1); sbi_ratio and lipschitz_lambda >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _setup_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    _LOG.addHandler(handler)
    _LOG.setLevel(logging.INFO)
    return handler


def _say(cfg: TrainConfig, msg: str) -> None:
    _LOG.info(msg)
    if cfg.progress:
        print(msg, file=sys.stderr, flush=True)


def _data(cfg: TrainConfig, size: tuple[int, int]) -> tuple[list[Item], list[Item]]:
    """(train, val) items, with self-blend entries added where the config asks for them."""
    items = load_items(cfg.data, size=size, real_only=cfg.real_only, every=cfg.frame_every)
    if cfg.val_data is not None:
        train_items = items
        val_items = load_items(cfg.val_data, size=size, real_only=cfg.real_only, every=cfg.frame_every)
    else:
        train_items, val_items = split_by_group(items, cfg.val_fraction, cfg.seed)
    ratio = 1.0 if cfg.real_only else cfg.sbi_ratio
    train_items = with_sbi(train_items, ratio, cfg.seed)
    if val_items and (cfg.real_only or not any(it.label == 1 for it in val_items)):
        val_items = with_sbi(val_items, 1.0, cfg.seed + 1)
    if not any(it.label != 0 for it in train_items) or not any(it.label == 0 for it in train_items):
        raise ConfigError("training data needs both real and fake (or self-blended) examples")
    return train_items, val_items


def _initial_model(cfg: TrainConfig) -> torch.nn.Module:
    """A fresh ``cfg.arch``, or the weights of ``cfg.init`` when fine-tuning."""
    if cfg.init is None:
        return create_model(cfg.arch, **cfg.arch_kwargs)
    model, card = load_checkpoint(cfg.init)
    if card.architecture != cfg.arch or dict(card.arch_kwargs) != dict(cfg.arch_kwargs):
        raise ConfigError(
            f"--init {cfg.init} is a {card.architecture} {card.arch_kwargs}, this run trains "
            f"{cfg.arch} {cfg.arch_kwargs}",
            path=str(cfg.init),
        )
    return model.train()


def _lr_lambda(total: int):  # type: ignore[no-untyped-def]
    warm = max(1, round(total * WARMUP_FRACTION))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f


def _autocast(cfg: TrainConfig, device: torch.device):  # type: ignore[no-untyped-def]
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def _predict(
    net: PixelModel, ds: CropDataset, cfg: TrainConfig, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits (N, 2) and labels of a dataset, in eval mode."""
    net.eval()
    out, labels = [], []
    for x, y in DataLoader(ds, batch_size=max(cfg.batch_size, 64), shuffle=False):
        with _autocast(cfg, device):
            out.append(net(x.to(device)).float().cpu().numpy())
        labels.append(y.numpy())
    net.train()
    return np.concatenate(out), np.concatenate(labels)


def _adversarial(
    net: PixelModel, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, step: int
) -> torch.Tensor:
    """Replace the first ``adv_fraction`` of the batch by L∞ PGD examples (Madry et al. 2018)."""
    from server.robust.attacks.pgd import PGD

    k = max(1, round(x.shape[0] * cfg.adv_fraction))
    attack = PGD(net, eps=cfg.adv_eps, steps=cfg.adv_steps, norm="linf", seed=cfg.seed * 100_003 + step)
    adv = attack(x[:k], y[:k])
    return torch.cat([adv, x[k:]])


def _penalty(net: PixelModel, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The Lipschitz penalty on the first ``lipschitz_batch`` samples (their own forward pass)."""
    sub = x[: cfg.lipschitz_batch].detach().requires_grad_(True)
    return lipschitz_penalty(net(sub).float(), sub, cfg.lipschitz_lambda)


def _save_state(path: Path, **state: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _val_metrics(
    logits: np.ndarray, labels: np.ndarray, calibration: dict[str, Any], threshold: float, target_fpr: float
) -> dict[str, Any]:
    probs = apply_calibration(logits, calibration)
    return compute_metrics(probs, labels, threshold=threshold, target_fpr=target_fpr)


def train(config: TrainConfig) -> Path:
    """Train a detector as ``config`` says; returns the run directory (a loadable checkpoint)."""
    cfg = config
    run_dir = Path(cfg.out)
    state_path = run_dir / RESUME_FILE
    if run_dir.exists() and any(run_dir.iterdir()) and not (cfg.resume and state_path.is_file()):
        raise ConfigError(
            f"run directory {run_dir} is not empty; pass resume or choose a new one", path=str(run_dir)
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _setup_logging(run_dir)
    try:
        return _train(cfg, run_dir, state_path)
    finally:
        _LOG.removeHandler(handler)
        handler.close()


def _train(cfg: TrainConfig, run_dir: Path, state_path: Path) -> Path:
    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.manual_seed(cfg.seed)
    defaults = arch_defaults(cfg.arch)
    size = tuple(defaults.input_size)
    train_items, val_items = _data(cfg, size)  # type: ignore[arg-type]
    cache = len(train_items) * size[0] * size[1] * 3 < CACHE_BYTES
    aug = AugmentConfig() if cfg.augment else None
    train_ds = CropDataset(train_items, size, augment_cfg=aug, seed=cfg.seed, cache=cache)  # type: ignore[arg-type]
    val_ds = CropDataset(val_items, size, augment_cfg=None, seed=cfg.seed + 1, cache=cache)  # type: ignore[arg-type]

    model = _initial_model(cfg)
    net = PixelModel(model, defaults.mean, defaults.std).to(device)
    net.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    # The schedule always spans every epoch, so max_steps interrupts a run without changing it.
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total))
    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    if cfg.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["config"]["arch"] != cfg.arch or state["config"]["seed"] != cfg.seed:
            raise ConfigError(f"{state_path} was written for another arch or seed; start a new run")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], list(state["history"])
        _say(cfg, f"resumed from {state_path} at epoch {start_epoch}, step {step}")

    n_fake = int((train_ds.labels() == 1).sum())
    n_sbi = sum(it.label == SBI_LABEL for it in train_items)
    _say(
        cfg,
        f"train {len(train_ds)} crops ({len(train_ds) - n_fake} real, {n_fake} fake incl. {n_sbi} "
        f"self-blended), val {len(val_ds)}, {cfg.arch} on {device}, {total} steps",
    )
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_steps and step >= cfg.max_steps:
            break
        train_ds.set_epoch(epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, drop_last=False)
        losses, t0 = [], time.perf_counter()
        for x, y in loader:
            if cfg.max_steps and step >= cfg.max_steps:
                break
            x, y = x.to(device), y.to(device)
            if cfg.adv_train == "pgd":
                x = _adversarial(net, x, y, cfg, step)
            with _autocast(cfg, device):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
                if cfg.lipschitz_lambda > 0:
                    loss = loss + _penalty(net, x, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if cfg.progress and step % cfg.log_every == 0:
                rate = len(losses) / (time.perf_counter() - t0)
                recent = float(np.mean(losses[-cfg.log_every :]))
                _say(
                    cfg,
                    f"epoch {epoch + 1}/{cfg.epochs} step {step}/{total} loss {recent:.4f} "
                    f"lr {sched.get_last_lr()[0]:.2e} {rate:.1f} it/s",
                )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": float(np.mean(losses)) if losses else None,
        }
        if len(val_ds):
            logits, labels = _predict(net, val_ds, cfg, device)
            m = _val_metrics(logits, labels, {"type": "none"}, 0.5, cfg.target_fpr)
            record.update(
                val_loss=float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))),
                val_accuracy=m["accuracy"],
                val_auroc=m["auroc"],
            )
        record["seconds"] = round(time.perf_counter() - t0, 2)
        history.append(record)
        _say(cfg, "epoch " + json.dumps(record))
        _save_state(
            state_path,
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            torch_rng=torch.get_rng_state(),
            epoch=epoch,
            step=step,
            history=history,
            config=cfg.to_dict(),
        )
    return _finish(cfg, run_dir, model, net, val_ds, train_ds, history, device, time.perf_counter() - started)


def _finish(
    cfg: TrainConfig,
    run_dir: Path,
    model: torch.nn.Module,
    net: PixelModel,
    val_ds: CropDataset,
    train_ds: CropDataset,
    history: list[dict[str, Any]],
    device: torch.device,
    seconds: float,
) -> Path:
    """Calibrate and threshold on validation, then write the checkpoint and metrics.json."""
    calibration: dict[str, Any] = {"type": "none"}
    threshold: float = 0.5
    val: dict[str, Any] = {}
    if len(val_ds):
        logits, labels = _predict(net, val_ds, cfg, device)
        if cfg.calibrate and len(set(labels.tolist())) == 2:
            calibration = {"type": "temperature", "temperature": fit_temperature(logits, labels)}
        probs = apply_calibration(logits, calibration)
        if len(set(labels.tolist())) == 2:
            chosen = compute_metrics(probs, labels, target_fpr=cfg.target_fpr)["at_target_fpr"]["threshold"]
            threshold = float(np.clip(chosen, 0.0, 1.0))
        val = _val_metrics(logits, labels, calibration, threshold, cfg.target_fpr)
    y = train_ds.labels()
    described = (
        f"{Path(cfg.data).name}/: {int((y == 0).sum())} real and {int((y == 1).sum())} fake training crops "
        f"({'real-only with self-blended pseudo-fakes' if cfg.real_only else f'sbi_ratio {cfg.sbi_ratio}'}); "
        f"{len(val_ds)} validation crops"
    )
    defaults = arch_defaults(cfg.arch)
    card = ModelCard(
        id=cfg.model_id or f"{cfg.arch}-{run_dir.name}",
        version=cfg.version,
        architecture=cfg.arch,
        arch_kwargs=dict(cfg.arch_kwargs),
        input_size=tuple(defaults.input_size),
        mean=defaults.mean,
        std=defaults.std,
        labels=LABELS,
        threshold=threshold,
        calibration=calibration,
        training_data=(cfg.training_data + " | " if cfg.training_data else "") + described,
        metrics={"val": val} if val else {},
        demo=cfg.demo,
        notes=cfg.notes,
    )
    card = save_checkpoint(model.eval(), card, run_dir)
    summary = {
        "config": cfg.to_dict(),
        "history": history,
        "val": val,
        "threshold": threshold,
        "calibration": calibration,
        "train_seconds": round(seconds, 1),
        "weights_sha256": card.weights_sha256,
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    _say(cfg, f"done in {seconds:.0f} s: {run_dir} (val AUROC {val.get('auroc')}, threshold {threshold:.4f})")
    return run_dir
