"""Purify stored face crops and score them again: the work behind the ``purify_frames`` task.

Library code, no Celery: the task (``worker.tasks.purify``) only builds the models once per
process and calls ``purify_and_score``. Every result is keyed by crop hash + purifier version +
detector version, so running the same request twice (a redelivered task) does nothing the
second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from server import limits
from server.db.purify_models import PurifyStatus
from server.robust.dip import DIPConfig, Purifier
from server.robust.purify_calibration import PurifiedThreshold
from server.robust.purify_store import Outcome, PurifyStore, detector_ref, encode_png, result_key
from server.settings import Settings
from server.vision.detector import Detector, resolve_device

_LOGGER = logging.getLogger(__name__)

PRESETS = ("auto", "paper", "fast", "cpu", "tiny")


def tiny_config() -> DIPConfig:
    """A 16² two-level net for 20 fixed iterations (~0.15 s a crop on one CPU core): tests, smoke runs.

    Built from the dataclass defaults, not from another preset, so it changes only when they do.
    """
    return DIPConfig(
        size=16,
        channels=(4, 8),
        skip=(0, 2),
        input_channels=4,
        group=8,
        stop="fixed",
        fixed_iter=20,
        max_iters=20,
        check_every=5,
        window=5,
        patience=10,
        variance_size=16,
        warm_max_iters=20,
    )


def purifier_config(preset: str, *, iterations: int = 0, device: str | torch.device = "cpu") -> DIPConfig:
    """The DIP config a preset names; ``iterations`` > 0 replaces its iteration budget.

    ``auto`` is ``fast`` on CUDA and ``cpu`` elsewhere; pass a resolved ``device`` (resolving
    "auto" touches CUDA, which must not happen in a process that forks afterwards).
    """
    if preset not in PRESETS:
        raise ValueError(f"purifier preset must be one of {PRESETS}, got {preset!r}")
    if preset == "auto":
        preset = "fast" if torch.device(device).type == "cuda" else "cpu"
    cfg = tiny_config() if preset == "tiny" else getattr(DIPConfig, preset)()
    if iterations > 0:
        fixed = iterations if cfg.stop == "fixed" else None
        cfg = cfg.replace(max_iters=iterations, min_iters=min(cfg.min_iters, iterations), fixed_iter=fixed)
    return cfg


@dataclass
class PurifyReport:
    """What one ``purify_and_score`` call did, by result key."""

    keys: list[str]
    skipped: list[str] = field(default_factory=list)  # already had a result: nothing done
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A small JSON-able summary (the task's return value)."""
        return {
            "crops": len(self.keys),
            "skipped": len(self.skipped),
            "done": len(self.done),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 3),
        }


def scoring_version(config: DIPConfig, calibration: PurifiedThreshold | None) -> str:
    """The purifier part of a result key: the DIP config, plus the purified-crop threshold when
    one maps the scores (a result scored under one calibration is never reused under another)."""
    return config.version() if calibration is None else f"{config.version()}+{calibration.tag()}"


def load_calibration(model_dir: Any, card: Any, config: DIPConfig) -> PurifiedThreshold | None:
    """``<model_dir>/purify.json`` when it belongs to these weights and this purifier config
    (else None, with a warning from ``PurifiedThreshold.load_for``)."""
    return PurifiedThreshold.load_for(model_dir, card.weights_sha256, config.version())


def _keys(crop_shas: Sequence[str], purifier_version: str, detector: str) -> dict[str, str]:
    return {result_key(sha, purifier_version, detector): sha for sha in dict.fromkeys(crop_shas)}


def _to_tensor(crops: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    resized = [
        c if c.shape[:2] == (h, w) else cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA) for c in crops
    ]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float().div_(255.0)


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    arr = (
        (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
    return list(np.ascontiguousarray(arr))


def purify_and_score(
    crop_shas: Sequence[str],
    *,
    store: PurifyStore,
    detector: Detector,
    purifier: Purifier,
    purifier_version: str,
    detector_version: str,
    max_attempts: int = limits.PURIFY_MAX_ATTEMPTS,
    on_start: Callable[[dict[str, int]], None] | None = None,
    calibration: PurifiedThreshold | None = None,
) -> PurifyReport:
    """Purify the crops that have no result yet under these versions, score them, store the results.

    ``purifier_version`` / ``detector_version`` are what the caller asked for; if this process
    runs something else, every crop gets a failed result saying so (never a result under a key
    it was not computed for). ``on_start({key: attempt number})`` is called once the attempt is
    recorded, just before purifying. With ``calibration`` (``purify.json``), stored scores are
    on the card's scale: at or above the card's threshold exactly when the purified crop is
    above the threshold fitted for purified crops.
    """
    started = time.perf_counter()
    keys = _keys(crop_shas, purifier_version, detector_version)
    report = PurifyReport(keys=list(keys))
    report.skipped = [k for k in store.get_results(keys)]
    pending = {k: sha for k, sha in keys.items() if k not in report.skipped}
    if not pending:
        report.seconds = time.perf_counter() - started
        return report

    failures: list[Outcome] = []
    mine = (scoring_version(purifier.config, calibration), detector_ref(detector.card))
    if mine != (purifier_version, detector_version):
        why = f"this worker runs purifier {mine[0]} with detector {mine[1]}, not the requested version"
        failures = [Outcome.failed(k, sha, why) for k, sha in pending.items()]
        pending = {}

    attempts = store.begin_attempts(pending)
    report.skipped += [k for k in pending if k not in attempts]  # finished meanwhile by another worker
    for k, n in attempts.items():
        if n > max_attempts:
            why = f"purification was started {n - 1} times without finishing (worker killed or crashed)"
            failures.append(Outcome.failed(k, pending[k], why))
    todo = {k: pending[k] for k, n in attempts.items() if n <= max_attempts}

    crops = store.get_crops(todo.values()) if todo else {}
    for k, sha in list(todo.items()):
        if sha not in crops:
            failures.append(Outcome.failed(k, sha, f"crop {sha} is not in the crop store"))
            del todo[k]

    outcomes = list(failures)
    if todo:
        if on_start is not None:
            on_start({k: attempts[k] for k in todo})
        outcomes += _purify(todo, crops, detector, purifier, calibration)
    store.save_results(outcomes)
    report.done = [o.key for o in outcomes if o.status == PurifyStatus.DONE]
    report.failed = [o.key for o in outcomes if o.status == PurifyStatus.FAILED]
    report.seconds = time.perf_counter() - started
    return report


def _purify(
    todo: dict[str, str],
    crops: dict[str, np.ndarray],
    detector: Detector,
    purifier: Purifier,
    calibration: PurifiedThreshold | None = None,
) -> list[Outcome]:
    """Purify ``todo`` (key → crop sha) as one batch at the detector's input size and score the outputs."""
    x = _to_tensor([crops[sha] for sha in todo.values()], detector.card.input_size)
    score_fn = detector.pixel_model() if purifier.config.stop == "score" else None
    result = purifier.purify(x, score_fn=score_fn)
    images = _to_uint8(result.images)
    scores = detector.predict(images)
    if calibration is not None:
        # The verdict compares every score with the card's threshold; this puts purified ones
        # on that scale (the card's cut was fitted on unpurified crops).
        scores = calibration.to_card_scale(scores, detector.card.threshold)
    share = result.seconds / len(images)  # the batch's wall time, amortised over its crops
    return [
        Outcome(
            key=k,
            crop_sha256=sha,
            status=PurifyStatus.DONE,
            purified_score=float(scores[i]),
            iterations=int(result.iterations[i]),
            stopped_by=result.stopped_by[i],
            seconds=share,
            purified_png=encode_png(images[i]),
        )
        for i, (k, sha) in enumerate(todo.items())
    ]


def fail_unfinished(
    store: PurifyStore, crop_shas: Sequence[str], *, purifier_version: str, detector_version: str, reason: str
) -> int:
    """Record ``reason`` as the result of every crop that has none yet; returns how many."""
    keys = _keys(crop_shas, purifier_version, detector_version)
    written = store.save_results([Outcome.failed(k, sha, reason) for k, sha in keys.items()])
    if written:
        _LOGGER.warning("marked %d crop(s) failed: %s", written, reason)
    return written


def purify_versions(settings: Settings, card: Any) -> tuple[str, str]:
    """(purifier version, detector ref) a server asks workers for, as its settings name them.

    Workers built from the same settings compute the same pair; one running anything else
    answers with failed results rather than results under the wrong key.
    """
    device = resolve_device(settings.device)
    cfg = purifier_config(settings.purifier_preset, iterations=settings.purifier_iterations, device=device)
    return scoring_version(cfg, load_calibration(settings.model_dir, card, cfg)), detector_ref(card)
