"""Real Celery workers (subprocesses, never eager mode) on real Redis and on the embedded broker.

Redis tests use database 7 of the shared server at 127.0.0.1:6379, flushed before each test
(never database 0). Every worker runs in its own process group and is killed with it at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.db.migrate import upgrade
from server.robust.purification import purifier_config
from server.robust.purify_store import PurifyStore, result_key
from server.settings import Settings
from server.worker_process import start_worker, stop_worker
from worker.celery_app import make_celery, send_purify_frames

REDIS_URL = "redis://127.0.0.1:6379/7"
DETECTOR_REF = "test-tiny@0.0.1"  # the card of conftest's tiny_checkpoint

# Short enough that a worker start (~5 s on a loaded 2-core machine) plus a tiny DIP fits
# well inside a test, long enough not to fail on a slow first task.
RESULT_TIMEOUT_S = 25.0


def _flush_test_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The broker of each kind: "" (embedded filesystem broker in data_dir) or the test Redis db."""
    if request.param == "redis":
        _flush_test_redis()
        return REDIS_URL
    return ""


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unmask.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def make_settings(
    tmp_path: Path, tiny_checkpoint: Path, broker_url: str, sqlite_url: str
) -> Callable[..., Settings]:
    """Settings for the workers of one test: tiny preset, one torch thread, short limits."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": sqlite_url,
            "broker_url": broker_url,
            "model_dir": tiny_checkpoint,
            "device": "cpu",
            "op_threads": 1,
            "purifier_preset": "tiny",
            "purify_soft_time_limit_s": 20.0,
            "purify_time_limit_s": 25.0,
            "broker_visibility_timeout_s": 30.0,
            "instance_id": "test-worker",
        }
        return Settings(**{**base, **overrides})

    return make


@dataclass
class Worker:
    """A worker subprocess and its log."""

    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = RESULT_TIMEOUT_S, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the log past offset ``after``, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log()[after:])
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"worker log has no {pattern!r} (exit code {self.proc.poll()}):\n{self.log()[-3000:]}")

    def kill_group(self) -> None:
        """``kill -9`` the worker and its pool children at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers; all are stopped (process group killed) when the test ends."""
    started: list[Worker] = []

    def start(settings: Settings, *, pool: str = "prefork") -> Worker:
        log_path = tmp_path / f"worker{len(started)}.log"
        with log_path.open("wb") as log:
            proc = start_worker(settings, pool=pool, stdout=log, stderr=subprocess.STDOUT)
        worker = Worker(proc, log_path)
        started.append(worker)
        return worker

    yield start
    for w in started:
        # No graceful stop: it costs seconds (the embedded broker's loop checks for shutdown every
        # 2 s) and the test is over; test_celery_app covers the warm stop once.
        stop_worker(w.proc, timeout=0)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[PurifyStore]:
    s = PurifyStore(sqlite_url)
    yield s
    s.close()


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct random RGB face-crop stand-ins."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(n)]


def purifier_version(settings: Settings) -> str:
    """The version workers with ``settings`` purify under (the server computes the same)."""
    return purifier_config(settings.purifier_preset, iterations=settings.purifier_iterations).version()


def keys_of(settings: Settings, shas: list[str]) -> list[str]:
    return [result_key(sha, purifier_version(settings), DETECTOR_REF) for sha in shas]


def send(settings: Settings, shas: list[str], check_id: str = "c" * 32) -> str:
    """Queue purify_frames the way the server does; returns the task id."""
    app = make_celery(settings)
    try:
        return send_purify_frames(
            app,
            check_id=check_id,
            crop_shas=shas,
            purifier_version=purifier_version(settings),
            detector_ref=DETECTOR_REF,
            request_id="req-test",
        )
    finally:
        app.close()


def wait_results(
    store: PurifyStore, keys: list[str], worker: Worker, timeout: float = RESULT_TIMEOUT_S
) -> dict[str, Any]:
    """Poll the purifications table (as the server does) until every key has a final result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.get_results(keys)
        if len(rows) == len(set(keys)):
            return rows
        time.sleep(0.1)
    pytest.fail(f"no results for {keys} after {timeout} s; worker log:\n{worker.log()[-3000:]}")
