"""50 purification tasks survive three kill -9s of the worker and a Redis restart: none lost or doubled."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.robust.purify_store import PurifyStore
from server.settings import Settings
from tests.worker.conftest import crops, keys_of, send

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

TASKS = 50

# Short limits so a task lost with its worker comes back within seconds (soft < hard < visibility).
LIMITS = {"purify_soft_time_limit_s": 8.0, "purify_time_limit_s": 10.0, "broker_visibility_timeout_s": 12.0}

DEADLINE_S = 240.0


def _done(store: PurifyStore, keys: list[str]) -> int:
    return len(store.get_results(keys))


def _wait_for_count(store: PurifyStore, keys: list[str], count: int, deadline: float) -> None:
    while _done(store, keys) < count:
        assert time.monotonic() < deadline, f"only {_done(store, keys)} of {count} results"
        time.sleep(0.2)


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
        torch_threads=1,
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
        for step, fault in enumerate(("kill", "redis", "kill", "kill"), start=1):
            _wait_for_count(store, keys, 8 * step, deadline)
            if fault == "redis":
                own_redis.restart()  # under a running worker: its consumer must reconnect
            else:
                worker.kill_group()  # kill -9 the whole worker (main process and child) mid-run
                worker = workers(settings)
        _wait_for_count(store, keys, TASKS, deadline)
        rows = store.get_results(keys)
    finally:
        store.close()
    assert set(rows) == set(keys), "every task has exactly one result row"
    assert all(row.status == "done" for row in rows.values()), {k: r.status for k, r in rows.items()}
    # A fault re-runs at most the one task the worker held (prefetch 1, acks late): the result
    # row is written once per crop either way; only its attempt counter shows the re-run.
    assert TASKS <= sum(row.attempts for row in rows.values()) <= TASKS + 4
