"""``purify_frames``: a thin task around ``server.robust.purification.purify_and_score``.

It receives crop hashes, never pixels (the crops are in the database), builds the detector and
the purifier on its first call in each pool process (never before the fork: CUDA is not
fork-safe, and ``worker_process_init`` handlers get 4 s), and always leaves a result per crop:
done, or failed with a reason, so the check that waits for it completes.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from sqlalchemy.exc import InterfaceError, OperationalError

from server import limits
from server.robust.dip import Purifier
from server.robust.purification import fail_unfinished, load_calibration, purifier_config, purify_and_score
from server.robust.purify_calibration import PurifiedThreshold
from server.robust.purify_store import PurifyStore
from server.vision.detector import Detector, resolve_device
from server.vision.threads import set_op_threads

_LOGGER = logging.getLogger(__name__)

TASK_NAME = "unmask.purify_frames"

# Worth another try later: the database or the network hiccuped (SQLite "database is locked"
# is an OperationalError too). Anything else is a bug or a bad crop and fails the crops at once.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@dataclass
class _Models:
    detector: Detector
    purifier: Purifier
    calibration: PurifiedThreshold | None = None  # purify.json: the cut for purified crops


class PurifyFramesTask(Task):
    """Per-process state of the task: the models (shared by threads) and a store per thread."""

    _models: _Models | None = None
    _models_lock = threading.Lock()
    _local = threading.local()

    def models(self) -> _Models:
        """The detector and purifier of this process, loaded on first use."""
        if self._models is None:
            with self._models_lock:
                if self._models is None:
                    s = self.app.settings
                    set_op_threads(s.op_threads)
                    device = resolve_device(s.device)
                    cfg = purifier_config(s.purifier_preset, iterations=s.purifier_iterations, device=device)
                    detector = Detector.load(s.model_dir, device)
                    calibration = load_calibration(s.model_dir, detector.card, cfg)
                    type(self)._models = _Models(detector, Purifier(cfg, device), calibration)
        return self._models

    def store(self) -> PurifyStore:
        """This thread's database access (its own event loop and engine), never one from before a fork."""
        pid, store = getattr(self._local, "store", (None, None))
        if store is None or pid != os.getpid():
            # The main process opens one for hard time limits; its forked children must not reuse it.
            store = PurifyStore(self.app.settings.resolved_database_url)
            self._local.store = (os.getpid(), store)
        return store

    def close_store(self) -> None:
        """Close this thread's store if it has one (tests; a worker just exits)."""
        pid, store = getattr(self._local, "store", (None, None))
        if store is not None and pid == os.getpid():
            store.close()
        self._local.__dict__.pop("store", None)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Record the failure as every unfinished crop's result, so the check still completes.

        Celery calls this once retries are exhausted (in the pool process) and after a hard time
        limit (in the worker's main process); never for a lost worker, whose task is redelivered.
        """
        call = _bind(args, kwargs)
        if isinstance(exc, TimeLimitExceeded):
            reason = (
                f"purification exceeded its hard time limit ({self.app.settings.purify_time_limit_s:g} s)"
            )
        else:
            reason = f"purification failed: {type(exc).__name__}: {exc}"
        try:
            fail_unfinished(
                self.store(),
                call["crop_shas"],
                purifier_version=call["purifier_version"],
                detector_version=call["detector_ref"],
                reason=reason,
            )
        except Exception:
            _LOGGER.exception("could not record the failure of task %s", task_id, extra=_extra(call, task_id))


def _bind(args: Any, kwargs: Any) -> dict[str, Any]:
    return inspect.signature(purify_frames).bind(None, *(args or ()), **(kwargs or {})).arguments


def _extra(call: dict[str, Any], task_id: str | None) -> dict[str, Any]:
    return {"request_id": call.get("request_id"), "check_id": call.get("check_id"), "task_id": task_id}


def purify_frames(
    self: PurifyFramesTask,
    check_id: str,
    crop_shas: list[str],
    purifier_version: str,
    detector_ref: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Purify and re-score the crops of one check; the results go to the purifications table."""
    call = {"check_id": check_id, "request_id": request_id}
    extra = _extra(call, self.request.id)
    if len(crop_shas) > limits.PURIFY_MAX_CROPS_PER_TASK:
        raise ValueError(
            f"{len(crop_shas)} crops in one task, the limit is {limits.PURIFY_MAX_CROPS_PER_TASK}"
        )
    settings = self.app.settings
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    store = self.store()

    def on_start(attempts: dict[str, int]) -> None:
        attempt = max(attempts.values())
        _LOGGER.info(
            "purifying %d crop(s) pid=%d attempt=%d redelivered=%s retries=%d",
            len(attempts), os.getpid(), attempt, redelivered, self.request.retries, extra=extra,
        )  # fmt: skip
        if settings.purify_debug_sleep_s and attempt == 1:
            time.sleep(settings.purify_debug_sleep_s)

    try:
        models = self.models()
        report = purify_and_score(
            crop_shas,
            store=store,
            detector=models.detector,
            purifier=models.purifier,
            purifier_version=purifier_version,
            detector_version=detector_ref,
            on_start=on_start,
            calibration=models.calibration,
        )
    except SoftTimeLimitExceeded:
        reason = f"purification exceeded its time limit ({settings.purify_soft_time_limit_s:g} s)"
        written = fail_unfinished(
            store, crop_shas, purifier_version=purifier_version, detector_version=detector_ref, reason=reason
        )
        _LOGGER.warning("time limit: %d crop(s) marked failed", written, extra=extra)
        return {
            "crops": len(set(crop_shas)),
            "timed_out": True,
            "failed": written,
            "redelivered": redelivered,
        }
    summary = {**report.as_dict(), "redelivered": redelivered}
    _LOGGER.info("purify_frames finished: %s", summary, extra=extra)
    return summary


def preload() -> None:
    """Import in the worker's main process what a first purification would import lazily.

    torch.optim's first optimiser imports torch._dynamo (~3 s of pure Python); done before the
    pool forks, every child inherits it. Imports only: no CUDA, no torch op, no thread pool.
    """
    import torch._dynamo  # noqa: F401


def register(app: Celery) -> Task:
    """Register ``purify_frames`` on ``app`` (its options are the task's reliability contract)."""
    return app.task(
        purify_frames,
        bind=True,
        base=PurifyFramesTask,
        name=TASK_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=TRANSIENT_ERRORS,
        retry_backoff=True,
        retry_backoff_max=60,
        retry_jitter=True,
        max_retries=5,
    )
