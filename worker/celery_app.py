"""The Celery app of the purification workers, built explicitly from a ``Settings`` object.

``make_celery(settings)`` is used by both sides: the server sends ``purify_frames`` with it and the
worker process runs it. ``celery -A worker.celery_app worker`` finds ``app`` here, built from the
environment on first access: that attribute is the worker's process edge, and importing this
module for ``make_celery`` reads nothing.

Results: no Celery result backend (``task_ignore_result``). A task writes its results into the
``purifications`` table, keyed by crop hash and versions, and the server reads them from there.
A result backend would be a second store with a 1-day expiry, keyed by task id rather than by
content (two checks of the same face would not share a result), and the embedded mode would
need yet another database for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery

from server.settings import Settings, load_settings
from worker.tasks.purify import TASK_NAME, preload, register

# A queue of its own, so GPU hosts consume only purification and other tasks can live elsewhere.
PURIFY_QUEUE = "unmask.purify"

# The embedded broker polls its folder this often when idle: 0.1 s gives ~0.1 s median
# latency (measured; kombu's default of 1 s gave ~0.6 s) for a listdir ten times a second.
EMBEDDED_POLL_INTERVAL_S = 0.1

# Redis: seconds between sweeps that put unacknowledged messages of vanished workers back on
# the queue; kombu's default (10 s × throttle 10) would add minutes on top of the visibility timeout.
MAX_RESTORE_INTERVAL_S = 10.0

# Redis: the lock a restore sweep holds expires after this many seconds at most. kombu's default
# (300 s) means a worker killed mid-sweep holds back every redelivery for five minutes; a sweep
# takes milliseconds, so a bound well under the visibility timeout is safe.
MAX_RESTORE_LOCK_S = 30.0

# See worker_lost_wait below.
WORKER_LOST_WAIT_S = 1.0

# A pool child whose resident memory exceeds this after a task is replaced (leaks in long-lived
# torch processes); a child holding the paper's DIP and a detector stays well below it.
MAX_CHILD_MEMORY_KB = 8 * 1024 * 1024

# Publishing must not hang a server request when the broker is down (celery#4296): a few quick
# retries, then the error goes to the caller.
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}

_LOGGER = logging.getLogger(__name__)


class UnmaskCelery(Celery):
    """A Celery app that carries the settings it was built from (``app.settings``)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__("unmask", **kwargs)
        self.settings = settings


def embedded_broker_dir(settings: Settings) -> Path:
    """Where the embedded (filesystem) broker keeps its messages."""
    return settings.data_dir / "broker"


def _broker(settings: Settings) -> tuple[str, dict[str, Any]]:
    if settings.broker_url:
        vt = settings.broker_visibility_timeout_s
        return settings.broker_url, {
            # Set here, not only as a top-level setting (celery#7651: otherwise the 1 h default stays).
            "visibility_timeout": vt,
            "unacked_restore_interval": max(1, min(MAX_RESTORE_INTERVAL_S, vt / 4)),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": int(max(1, min(MAX_RESTORE_LOCK_S, vt / 2))),
            "socket_connect_timeout": 5,
        }
    # Filesystem transport: a message is one file; taking it is a rename, so it needs no server.
    # SQLAlchemy's transport was as slow (~1 s polling) and never deletes delivered rows.
    root = embedded_broker_dir(settings)
    queue, processed = root / "queue", root / "processed"
    for d in (queue, processed):
        d.mkdir(parents=True, exist_ok=True)
    # "localhost" only silences kombu's "no hostname" warning; nothing is contacted.
    return "filesystem://localhost//", {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "processed_folder": str(processed),
        # Exchange bindings (kombu's default is ./control, relative to the worker's working directory).
        "control_folder": str(root / "control"),
        # Kept files would pile up forever; unkept ones are moved to the temp dir and deleted.
        "store_processed": False,
        "polling_interval": EMBEDDED_POLL_INTERVAL_S,
    }


def make_celery(settings: Settings) -> UnmaskCelery:
    """The Celery app for ``settings`` with the purification task registered."""
    broker, transport_options = _broker(settings)
    app = UnmaskCelery(settings, broker=broker, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # At-least-once: ack after the task returns and requeue when the child dies mid-task; the
        # task is idempotent (results keyed by content + versions, first writer wins).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A running task that loses the broker connection cannot be acked any more and will be
        # redelivered, so stop it rather than finish work that is done again.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # One reserved task per process: a purification is seconds to minutes of GPU time.
        worker_prefetch_multiplier=1,
        # How long the main process waits for a result from a child that died before it declares the
        # worker lost and requeues the task (default 10 s); results go to our database, not through
        # the pool, so there is nothing worth waiting for.
        worker_lost_wait=WORKER_LOST_WAIT_S,
        task_soft_time_limit=settings.purify_soft_time_limit_s,
        task_time_limit=settings.purify_time_limit_s,
        task_default_queue=PURIFY_QUEUE,
        task_routes={TASK_NAME: {"queue": PURIFY_QUEUE}},
        worker_hijack_root_logger=False,
        worker_max_memory_per_child=MAX_CHILD_MEMORY_KB,
        # Remote control over the filesystem transport is one more folder polled for nothing.
        worker_enable_remote_control=bool(settings.broker_url),
        timezone="UTC",
    )
    register(app)
    return app


def send_purify_frames(
    app: Celery,
    *,
    check_id: str,
    crop_shas: list[str],
    purifier_version: str,
    detector_ref: str,
    request_id: str | None = None,
) -> str:
    """Queue a ``purify_frames`` task and return its id (blocking: call it off the event loop)."""
    result = app.send_task(
        TASK_NAME,
        args=[check_id, list(crop_shas), purifier_version, detector_ref, request_id],
        queue=PURIFY_QUEUE,
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
    )
    return result.id


def _edge_app() -> UnmaskCelery:
    """The worker process's app: settings from the environment, our JSON logs."""
    from celery import signals

    from server.logs import setup_logging

    settings = load_settings()

    @signals.setup_logging.connect(weak=False)
    def _logging(**_: Any) -> None:
        # Connecting this stops Celery from installing its own handlers.
        setup_logging(settings.log_level)

    @signals.worker_init.connect(weak=False)
    def _preload(**_: Any) -> None:
        preload()

    return make_celery(settings)


_APP: UnmaskCelery | None = None


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access so that importing make_celery has no side effects.
    global _APP
    if name != "app":
        raise AttributeError(name)
    if _APP is None:
        _APP = _edge_app()
    return _APP
