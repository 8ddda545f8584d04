"""50 purification tasks survive three kill -9s of the worker and a Redis restart: none lost or doubled.

kombu's Redis transport takes a message off the queue (BRPOP) and only then records it as
unacknowledged (a second round trip), so a worker killed between the two loses that one message
for good (celery#7950 shows the sequence). The server does not rely on the broker alone: a frame
whose result has not come back ``purify_time_limit_s + RESEND_SLACK_S`` after sending is sent
again (``PurifyDispatcher.collect``; the task is idempotent). This test plays that client: it
re-sends what is missing once results stop coming, and bounds how often that was needed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.purify_client import RESEND_SLACK_S
from server.robust.purify_store import PurifyStore
from server.settings import Settings
from tests.worker.conftest import Worker, crops, keys_of, send

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(480)]

TASKS = 50
KILLS = 3

# Short limits so a task lost with its worker comes back within seconds (soft < hard < visibility).
LIMITS = {"purify_soft_time_limit_s": 8.0, "purify_time_limit_s": 10.0, "broker_visibility_timeout_s": 12.0}

# The test's own deadline (it names how many results came back), well inside pytest's timeout above:
# on a loaded 2-core CI machine four worker starts plus three redeliveries took over 120 s.
DEADLINE_S = 300.0


def _done(store: PurifyStore, keys: list[str]) -> int:
    return len(store.get_results(keys))


def _wait_for_count(store: PurifyStore, keys: list[str], count: int, deadline: float, worker: Worker) -> None:
    while _done(store, keys) < count:
        assert time.monotonic() < deadline, (
            f"only {_done(store, keys)} of {count} results; log:\n{worker.log()[-3000:]}"
        )
        time.sleep(0.2)


def _finish(
    store: PurifyStore, settings: Settings, shas: list[str], keys: list[str], deadline: float, worker: Worker
) -> int:
    """Wait for every result, re-sending each missing task once when none has come back for as long
    as the server waits before its re-send; returns how many were re-sent."""
    resend_after = settings.purify_time_limit_s + RESEND_SLACK_S
    resent: set[str] = set()
    last_count, last_progress = -1, time.monotonic()
    while (count := _done(store, keys)) < len(keys):
        assert time.monotonic() < deadline, (
            f"only {count} of {len(keys)} results ({len(resent)} re-sent); log:\n{worker.log()[-3000:]}"
        )
        if count != last_count:
            last_count, last_progress = count, time.monotonic()
        elif time.monotonic() - last_progress > resend_after:
            have = store.get_results(keys)
            for i, (sha, key) in enumerate(zip(shas, keys, strict=True)):
                if key not in have and sha not in resent:
                    resent.add(sha)
                    send(settings, [sha], check_id=f"{i:032x}")
            last_progress = time.monotonic()
        time.sleep(0.2)
    return len(resent)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_fifty_tasks_survive_worker_kills_and_a_redis_restart(
    own_redis,
    workers,
    migrated_url: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=migrated_url,
        broker_url=own_redis.url,
        model_dir=tiny_checkpoint,
        device="cpu",
        op_threads=1,
        purifier_preset="tiny",
        instance_id="test-faults",
        **LIMITS,
    )
    store = PurifyStore(migrated_url)
    try:
        shas = store.put_crops(crops(TASKS, seed=11))
        keys = keys_of(settings, shas)
        for i, sha in enumerate(shas):
            send(settings, [sha], check_id=f"{i:032x}")
        deadline = time.monotonic() + DEADLINE_S
        worker = workers(settings)
        faults = ("kill", "redis", "kill", "kill")
        assert faults.count("kill") == KILLS
        for step, fault in enumerate(faults, start=1):
            _wait_for_count(store, keys, 8 * step, deadline, worker)
            if fault == "redis":
                own_redis.restart()  # under a running worker: its consumer must reconnect
            else:
                worker.kill_group()  # kill -9 the whole worker (main process and child) mid-run
                worker = workers(settings)
        resent = _finish(store, settings, shas, keys, deadline, worker)
        rows = store.get_results(keys)
    finally:
        store.close()
    assert set(rows) == set(keys), "every task has exactly one result row"
    assert all(row.status == "done" for row in rows.values()), {k: r.status for k, r in rows.items()}
    # Only a kill can lose a message (one per kill at most: prefetch 1); the broker's own
    # redelivery brings back the rest.
    assert resent <= KILLS, f"{resent} tasks had to be re-sent"
    # A fault re-runs at most the one task the worker held (prefetch 1, acks late): the result
    # row is written once per crop either way; only its attempt counter shows the re-run.
    assert TASKS <= sum(row.attempts for row in rows.values()) <= TASKS + 4
