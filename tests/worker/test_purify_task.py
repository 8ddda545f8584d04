"""purify_frames end to end: a real worker subprocess, a real broker, results in the database."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from server.robust.purify_store import PurifyStore
from tests.worker.conftest import crops, keys_of, send, wait_results
from worker.celery_app import embedded_broker_dir

REDIS_ONLY = pytest.mark.parametrize(
    "broker_url", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True
)
EMBEDDED_ONLY = pytest.mark.parametrize("broker_url", ["embedded"], indirect=True)
STARTED = r'"purifying \d+ crop\(s\) pid=(\d+) attempt=(\d+)'


def _round_trip_then_again(settings, workers, store: PurifyStore) -> None:
    """Crops in, task out, results polled from the database; the same task again changes nothing."""
    shas = store.put_crops(crops(2))
    worker = workers(settings)
    send(settings, shas)
    rows = wait_results(store, keys_of(settings, shas), worker)
    for row in rows.values():
        assert row.status == "done" and 0.0 <= row.purified_score <= 1.0
        assert (row.iterations, row.stopped_by, row.attempts, row.error) == (20, "fixed", 1, None)
        assert row.purified_png

    mark = len(worker.log())
    send(settings, shas)
    worker.wait_for(r"'skipped': 2, 'done': 0", after=mark)
    again = store.get_results(keys_of(settings, shas))
    for key, row in rows.items():
        assert (again[key].finished_at, again[key].attempts) == (row.finished_at, 1)


@EMBEDDED_ONLY
def test_round_trip_then_the_same_task_again_is_a_no_op(make_settings, workers, store) -> None:
    _round_trip_then_again(make_settings(), workers, store)  # the embedded pair: filesystem + SQLite


@pytest.mark.postgres
@REDIS_ONLY
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_round_trip_on_postgresql_with_redis_then_again_is_a_no_op(
    make_settings, workers, migrated_url
) -> None:
    pg = PurifyStore(migrated_url)  # the production pair
    try:
        _round_trip_then_again(make_settings(database_url=migrated_url), workers, pg)
    finally:
        pg.close()


def test_a_child_killed_mid_task_is_redelivered_and_completes(make_settings, workers, store) -> None:
    # Only the first attempt of a crop sleeps, so the redelivered run finishes at once.
    settings = make_settings(purify_debug_sleep_s=60.0)
    shas = store.put_crops(crops(1, seed=1))
    worker = workers(settings)
    send(settings, shas)
    started = worker.wait_for(STARTED)
    child = int(started.group(1))
    assert started.group(2) == "1" and child != worker.proc.pid
    os.kill(child, signal.SIGKILL)

    [row] = wait_results(store, keys_of(settings, shas), worker).values()
    assert (row.status, row.attempts) == ("done", 2)
    rerun = worker.wait_for(STARTED, after=started.end())
    assert rerun.group(2) == "2" and int(rerun.group(1)) != child
    assert worker.proc.poll() is None  # the main process replaced its child and lived on


def test_a_task_over_its_soft_time_limit_fails_its_crops_with_a_reason(make_settings, workers, store) -> None:
    settings = make_settings(
        purifier_iterations=1_000_000,
        purify_soft_time_limit_s=2.0,
        purify_time_limit_s=15.0,
        broker_visibility_timeout_s=20.0,
    )
    shas = store.put_crops(crops(2, seed=2))
    worker = workers(settings)
    send(settings, shas)
    rows = wait_results(store, keys_of(settings, shas), worker)
    for row in rows.values():
        assert row.status == "failed"
        assert row.error == "purification exceeded its time limit (2 s)"
    worker.wait_for(r"succeeded in .*'timed_out': True")  # returned normally: the message is acked


@REDIS_ONLY
def test_redis_redelivers_the_task_of_a_whole_worker_killed_mid_task(make_settings, workers, store) -> None:
    limits = {"purify_soft_time_limit_s": 4.0, "purify_time_limit_s": 5.0, "broker_visibility_timeout_s": 6.0}
    first = make_settings(purify_debug_sleep_s=60.0, **limits)
    shas = store.put_crops(crops(1, seed=3))
    worker = workers(first)
    send(first, shas)
    worker.wait_for(STARTED)
    worker.kill_group()  # main process and child: nobody is left to requeue the message

    second = workers(make_settings(**limits))
    [row] = wait_results(store, keys_of(first, shas), second).values()
    assert (row.status, row.attempts) == ("done", 2)


@EMBEDDED_ONLY
def test_embedded_broker_loses_a_whole_killed_worker_task_and_a_resend_completes_it(
    make_settings, workers, store
) -> None:
    """The filesystem transport takes a message off disk when it is fetched: a kill -9 of the whole
    worker loses it (no visibility timeout). The server re-sends unanswered crops; the resend is safe
    because the task is idempotent."""
    first = make_settings(purify_debug_sleep_s=60.0)
    shas = store.put_crops(crops(1, seed=4))
    worker = workers(first)
    send(first, shas)
    worker.wait_for(STARTED)
    worker.kill_group()
    assert list((embedded_broker_dir(first) / "queue").glob("*.msg")) == []  # the message is gone

    second = make_settings()
    later = workers(second)
    send(second, shas)
    [row] = wait_results(store, keys_of(second, shas), later).values()
    assert (row.status, row.attempts) == ("done", 2)


@EMBEDDED_ONLY
def test_embedded_broker_lives_in_the_data_dir(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    send(settings, ["0" * 64])
    assert len(list((embedded_broker_dir(settings) / "queue").glob("*.msg"))) == 1
    assert embedded_broker_dir(settings).is_relative_to(tmp_path)
