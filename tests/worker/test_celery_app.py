"""The Celery app's reliability settings, the task's contract, the worker process helpers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from celery.exceptions import TimeLimitExceeded

from server.errors import ConfigError
from server.robust.purify_store import PurifyStore
from server.settings import Settings, load_settings
from server.worker_process import run_worker, worker_command, worker_env
from tests.worker.conftest import DETECTOR_REF, crops, keys_of, purifier_version
from worker import celery_app
from worker.celery_app import PURIFY_QUEUE, TASK_NAME, make_celery

EMBEDDED_ONLY = pytest.mark.parametrize("broker_url", ["embedded"], indirect=True)
REDIS_ONLY = pytest.mark.parametrize(
    "broker_url", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True
)


def test_reliability_settings_on_the_embedded_broker(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, purify_soft_time_limit_s=30, purify_time_limit_s=40)
    app = make_celery(s)
    c = app.conf
    assert (c.task_acks_late, c.task_reject_on_worker_lost, c.worker_prefetch_multiplier) == (True, True, 1)
    assert (c.task_soft_time_limit, c.task_time_limit) == (30, 40)
    assert (c.task_ignore_result, c.task_serializer, c.worker_hijack_root_logger) == (True, "json", False)
    assert c.broker_url.startswith("filesystem://")
    opts = c.broker_transport_options
    assert (
        Path(opts["data_folder_in"]) == tmp_path / "broker" / "queue"
        and Path(opts["data_folder_in"]).is_dir()
    )
    assert opts["polling_interval"] <= 0.1
    assert app.main == "unmask" and app.settings is s
    app.close()


def test_redis_gets_the_visibility_timeout_in_its_transport_options(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/7", broker_visibility_timeout_s=900)
    app = make_celery(s)
    opts = app.conf.broker_transport_options
    assert (
        opts["visibility_timeout"],
        opts["unacked_restore_interval"],
        opts["unacked_restore_throttle"],
        opts["unacked_mutex_expire"],
    ) == (
        900,
        10,
        1,
        30,  # a worker killed mid-sweep holds redeliveries back 30 s, not kombu's 300 s
    )
    assert not (tmp_path / "broker").exists()
    app.close()


def test_the_task_contract(tmp_path: Path) -> None:
    app = make_celery(Settings(data_dir=tmp_path))
    task = app.tasks[TASK_NAME]
    assert (task.acks_late, task.reject_on_worker_lost, task.max_retries, task.retry_backoff_max) == (
        True,
        True,
        5,
        60,
    )
    assert task.retry_backoff and task.autoretry_for
    assert app.amqp.router.route({}, TASK_NAME)["queue"].name == PURIFY_QUEUE
    app.close()


def test_time_limits_must_nest() -> None:
    with pytest.raises(ConfigError, match="purify_soft_time_limit_s"):
        Settings(purify_soft_time_limit_s=10, purify_time_limit_s=5).replace()
    with pytest.raises(ConfigError):
        Settings(purify_time_limit_s=700, broker_visibility_timeout_s=600).replace()


def test_worker_env_rebuilds_the_same_settings(tmp_path: Path) -> None:
    s = Settings(
        data_dir=tmp_path,
        broker_url="redis://x:1/2",
        purifier_preset="tiny",
        purify_soft_time_limit_s=1.5,
        purify_time_limit_s=2.25,
        broker_visibility_timeout_s=3.0,
        instance_id="w1",
    )
    env = worker_env(s, base={"PATH": "/bin", "UNMASK_CONFIG": "/elsewhere.toml"})
    assert "UNMASK_CONFIG" not in env and env["PATH"] == "/bin"
    assert load_settings(env=env) == s


def test_worker_command_checks_its_arguments() -> None:
    cmd = worker_command(Settings(), concurrency=2, pool="solo")
    assert cmd[1:6] == ["-m", "celery", "-A", "worker.celery_app", "worker"]
    assert "--pool=solo" in cmd and "--concurrency=2" in cmd and f"--queues={PURIFY_QUEUE}" in cmd
    with pytest.raises(ValueError):
        worker_command(Settings(), pool="gevent")


def test_the_worker_edge_reads_the_environment_only_when_asked(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(celery_app, "_APP", None)
    monkeypatch.setenv("UNMASK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("UNMASK_PURIFIER_PRESET", "tiny")
    app = celery_app.app
    assert app.settings.data_dir == tmp_path and app.settings.purifier_preset == "tiny"
    assert celery_app.app is app
    app.close()


@EMBEDDED_ONLY
def test_a_hard_time_limit_or_a_final_error_fails_the_crops(make_settings, store: PurifyStore) -> None:
    settings = make_settings()
    shas = store.put_crops(crops(2, seed=9))
    app = make_celery(settings)
    task = app.tasks[TASK_NAME]
    pv = purifier_version(settings)
    kwargs = {"check_id": "c" * 32, "crop_shas": shas, "purifier_version": pv, "detector_ref": DETECTOR_REF}
    try:
        # Hard limit: called in the worker's main process, with the task's positional args.
        task.on_failure(TimeLimitExceeded(25), "t1", ["c" * 32, shas[:1], pv, DETECTOR_REF, "req"], {}, None)
        # Retries exhausted or a non-transient error: the remaining crops fail with the error.
        task.on_failure(ValueError("bad crop"), "t2", [], kwargs, None)
    finally:
        task.close_store()
        app.close()
    keys = keys_of(settings, shas)
    rows = store.get_results(keys)
    assert rows[keys[0]].error == "purification exceeded its hard time limit (25 s)"
    assert rows[keys[1]].error == "purification failed: ValueError: bad crop"


def _pool_child_of(parent: int, timeout: float) -> int:
    """The first grandchild of ``parent`` (the prefork pool process), waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            for child in children:
                grand = Path(f"/proc/{child}/task/{child}/children")
                if grand.exists() and grand.read_text().split():
                    return int(child)
        time.sleep(0.1)
    raise AssertionError("no worker with a pool child appeared")


@REDIS_ONLY  # `unmask worker` is the production command: workers on GPU hosts behind Redis
def test_run_worker_runs_until_terminated_and_stops_warm(make_settings) -> None:
    settings = make_settings()
    outcome: list[BaseException] = []
    handler = signal.getsignal(signal.SIGTERM)

    def terminate_when_ready() -> None:
        try:
            _pool_child_of(os.getpid(), timeout=30)
            time.sleep(1.0)  # the pool exists; let the main process finish its start-up
            os.kill(os.getpid(), signal.SIGTERM)  # run_worker forwards it to the worker
        except BaseException as exc:  # reported by the test thread
            outcome.append(exc)

    helper = threading.Thread(target=terminate_when_ready)
    helper.start()
    started = time.monotonic()
    rc = run_worker(settings, concurrency=1, pool="prefork")
    helper.join()
    assert not outcome, outcome
    assert rc == 0
    assert time.monotonic() - started < 30
    assert signal.getsignal(signal.SIGTERM) == handler
