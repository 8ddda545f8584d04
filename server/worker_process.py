"""Start and stop a Celery purification worker as a child process (``unmask serve``, ``unmask worker``).

The child is ``python -m celery -A worker.celery_app worker`` with the settings passed as
``UNMASK_*`` variables, so it rebuilds exactly the settings object the parent holds. It runs in
its own process group: stopping it reaches the pool children too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from typing import IO, Any

from server.settings import ENV_PREFIX, REPO_ROOT, Settings

_LOGGER = logging.getLogger(__name__)

POOLS = ("prefork", "solo", "threads")

# A worker stopped with SIGTERM finishes its running task first (warm shutdown); a purification
# should end well within this, after which the whole group is killed (and the task, acked late,
# is redelivered where the broker can: see worker/celery_app.py).
STOP_TIMEOUT_S = 30.0


def worker_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with every setting as ``UNMASK_*``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(ENV_PREFIX)}
    for f in dataclasses.fields(settings):
        if f.name == "extra":
            continue
        value = getattr(settings, f.name)
        env[ENV_PREFIX + f.name.upper()] = repr(value) if isinstance(value, float) else str(value)
    # The child imports worker/ and server/ from this checkout even when not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def worker_command(settings: Settings, *, concurrency: int = 1, pool: str = "prefork") -> list[str]:
    """The command line of a purification worker."""
    from worker.celery_app import PURIFY_QUEUE

    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--queues={PURIFY_QUEUE}",
        f"--hostname=unmask-{uuid.uuid4().hex[:8]}@%h",
        f"--loglevel={settings.log_level}",
        # Gossip, mingle and heartbeats are worker-to-worker chatter we do not use; mingle alone
        # adds a second to every start.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def start_worker(
    settings: Settings,
    *,
    concurrency: int = 1,
    pool: str = "prefork",
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> subprocess.Popen:
    """Start a worker in its own process group; returns at once (it connects in the background)."""
    return subprocess.Popen(
        worker_command(settings, concurrency=concurrency, pool=pool),
        env=worker_env(settings),
        cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_worker(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int:
    """Warm-stop the worker (SIGTERM), kill its whole group after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    # Pool children of a worker that died abruptly may outlive it; they are in its group.
    _signal_group(proc, signal.SIGKILL)
    return proc.returncode


def run_worker(settings: Settings, concurrency: int = 1, pool: str = "prefork") -> int:
    """Run a worker in the foreground until it exits or this process is interrupted; its exit code."""
    proc = start_worker(settings, concurrency=concurrency, pool=pool)

    forwarded: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signum)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
        # A stop signal that reached the worker before Celery installed its handlers ends it by
        # the signal itself: that is still the stop that was asked for (acks_late redelivers any
        # task it held), not a crash.
        return 0 if forwarded and rc == -forwarded[-1] else rc
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop_worker(proc, timeout=STOP_TIMEOUT_S)


class WorkerSupervisor:
    """Keeps one embedded worker running beside ``unmask serve``: restarts it if it dies."""

    # A worker that dies right after starting (bad config) is restarted at most this often.
    RESTART_BACKOFF_S = 5.0

    def __init__(self, settings: Settings, *, concurrency: int = 1, pool: str = "prefork") -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.pool = pool
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        """Start the worker and the watcher thread."""
        self.proc = start_worker(self.settings, concurrency=self.concurrency, pool=self.pool)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            if self.proc is not None and self.proc.poll() is not None:
                _LOGGER.error("embedded worker exited with %s; restarting", self.proc.returncode)
                self.restarts += 1
                if self._stop.wait(self.RESTART_BACKOFF_S):
                    return
                self.proc = start_worker(self.settings, concurrency=self.concurrency, pool=self.pool)

    def stop(self) -> None:
        """Stop watching, then stop the worker (warm shutdown, killed after the timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.proc is not None and self.proc.poll() is None:
            stop_worker(self.proc)
