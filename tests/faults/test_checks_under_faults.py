"""50 checks through the real app, each with purification, survive three kill -9s of the worker and
a Redis restart: 50 verdicts, none lost, none duplicated.

The app runs in-process (aiohttp test client) on a fresh PostgreSQL database and a private
``redis-server``; purification runs on a real Celery worker subprocess (prefork, tiny DIP
preset). The detector is the untrained tiny checkpoint with a tamper calibration whose threshold
is 0, so every face frame is suspicious and goes to purification: this tests delivery, not
detection. Each video is 1.5 s with the same face, tinted differently, so every check has 3 face
frames with crops of its own (no shared purification result, no cache hit).

A client keeps ``IN_FLIGHT`` checks running (as one token would, below its concurrency cap) and
polls each to its end. After every ``FAULT_EVERY`` finished checks the next fault is applied as
soon as the worker logs that it started purifying, so it lands mid-task.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from sqlalchemy import select

from server.db.engine import create_engine, session_factory
from server.db.models import Check, Frame, Verdict
from server.db.purify_models import Purification, PurifyStatus
from server.media.encode import write_video
from server.settings import Settings
from tests.faults.test_worker_faults import LIMITS  # a lost task comes back within seconds
from tests.helpers.videos import face_frames

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(480)]

CHECKS = 50
IN_FLIGHT = 8
FAULT_EVERY = 8
FAULTS = ("kill", "redis", "kill", "kill")
# 1.5 s at 10 fps: the service samples t = 0, 0.5, 1.0 (2 frames/s), three face frames, the
# fewest that give a real (not inconclusive) verdict, whose reason names any purification failure.
SECONDS, FPS = 1.5, 10
FACE_FRAMES = 3

DEADLINE_S = 360.0
POLL_S = 0.3

# The worker's line when a task starts purifying (worker/tasks/purify.py).
STARTED = re.compile(r"purifying (\d+) crop\(s\) pid=(\d+) attempt=(\d+)")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """``CHECKS`` distinct short face videos: video i is tinted by its own offset."""
    root = tmp_path_factory.mktemp("fault-videos")
    out = []
    for i in range(CHECKS):
        tint = np.array([2 * i - CHECKS, 0, CHECKS - 2 * i], dtype=np.int16)
        frames = (
            np.clip(f.astype(np.int16) + tint, 0, 255).astype(np.uint8) for f in face_frames(SECONDS, fps=FPS)
        )
        out.append(write_video(frames, root / f"v{i}.mp4", fps=FPS).read_bytes())
    assert len(set(out)) == CHECKS
    return out


async def _upload(api, video: bytes, i: int) -> str:
    form = aiohttp.FormData()
    form.add_field("video", video, filename=f"v{i}.mp4", content_type="video/mp4")
    resp = await api.post("/v1/checks", data=form)
    assert resp.status == 202, await resp.text()
    return (await resp.json())["id"]


async def _until_finished(api, check_id: str, deadline: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    while True:
        resp = await api.get(f"/v1/checks/{check_id}")
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        if body["status"] in ("done", "failed"):
            return body
        assert loop.time() < deadline, f"check {check_id} still {body['status']}"
        await asyncio.sleep(POLL_S)


async def _next_task_start(log: Callable[[], str], after: int, timeout: float = 30.0) -> None:
    """Wait until the worker logs a task start past offset ``after`` (or ``timeout`` passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while STARTED.search(log(), after) is None and loop.time() < deadline:
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_fifty_checks_with_purification_survive_worker_kills_and_a_redis_restart(
    aiohttp_client,
    own_redis,
    workers,
    migrated_url: str,
    flagging_checkpoint: Path,
    videos: list[bytes],
    tmp_path: Path,
) -> None:
    from server.app import create_app

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=migrated_url,
        broker_url=own_redis.url,
        model_dir=flagging_checkpoint,
        device="cpu",
        op_threads=1,
        max_running_checks=2,
        purifier_preset="tiny",
        instance_id="test-checks-faults",
        **LIMITS,
    )
    started = time.monotonic()
    worker = workers(settings)
    api = await aiohttp_client(create_app(settings))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S

    slots = asyncio.Semaphore(IN_FLIGHT)
    finished: dict[str, dict[str, Any]] = {}
    progress = asyncio.Condition()

    async def follow(check_id: str) -> None:
        try:
            body = await _until_finished(api, check_id, deadline)
        finally:
            slots.release()
        async with progress:
            finished[check_id] = body
            progress.notify_all()

    async def client() -> list[str]:
        ids, followers = [], []
        for i, video in enumerate(videos):
            await slots.acquire()
            ids.append(await _upload(api, video, i))
            followers.append(asyncio.create_task(follow(ids[-1])))
        await asyncio.gather(*followers)
        return ids

    applied: list[str] = []

    async def faults() -> None:
        nonlocal worker
        for step, fault in enumerate(FAULTS, start=1):
            async with progress:
                await progress.wait_for(lambda step=step: len(finished) >= FAULT_EVERY * step)
            # Land the fault while a task runs: wait for the next "purifying" line of this worker.
            await _next_task_start(worker.log, len(worker.log()))
            if fault == "redis":
                await asyncio.to_thread(own_redis.restart)  # under the running worker and server
            else:
                await asyncio.to_thread(worker.kill_group)  # kill -9 main process and pool child
                worker = workers(settings)
            applied.append(f"{fault} after {len(finished)} done ({time.monotonic() - started:.1f} s)")

    ids, _ = await asyncio.gather(client(), faults())
    elapsed = time.monotonic() - started

    # The API: every accepted check ended done, with a verdict.
    assert len(ids) == len(set(ids)) == CHECKS
    not_done = {i: b.get("error") for i, b in finished.items() if b["status"] != "done"}
    assert not not_done, not_done

    # The database: exactly one verdict row per check, every suspicious frame with a final outcome.
    engine = create_engine(migrated_url)
    try:
        async with session_factory(engine)() as s:
            statuses = dict((await s.execute(select(Check.id, Check.status))).all())
            verdicts: dict[str, list[dict[str, Any]]] = {}
            for check_id, payload in (await s.execute(select(Verdict.check_id, Verdict.payload))).all():
                verdicts.setdefault(check_id, []).append(payload)
            frames = (await s.execute(select(Frame.check_id, Frame.tamper, Frame.purify_status))).all()
            purifications = (await s.execute(select(Purification))).scalars().all()
    finally:
        await engine.dispose()
    assert statuses == dict.fromkeys(ids, "done"), statuses
    assert {k: len(v) for k, v in verdicts.items()} == dict.fromkeys(ids, 1), "one verdict per check"
    assert len(frames) == CHECKS * FACE_FRAMES
    assert all(t is not None and p in ("done", "failed") for _, t, p in frames), frames

    purified = failed = crops = 0
    for check_id, (verdict,) in verdicts.items():
        tamper = verdict["tamper"]
        assert verdict["faces"]["frames_with_faces"] == FACE_FRAMES, (check_id, verdict["faces"])
        assert tamper["suspicious_frames"] == FACE_FRAMES, (check_id, tamper)
        assert tamper["purified_frames"] + tamper["purify_failed"] == FACE_FRAMES, (check_id, tamper)
        if tamper["purify_failed"]:
            assert "purification failed for" in verdict["reason"], verdict["reason"]
        assert verdict["label"] == "tampered", verdict["reason"]
        purified += tamper["purified_frames"]
        failed += tamper["purify_failed"]
        crops += verdict["faces"]["total"]

    # One final result row per face crop (keyed by crop, so a re-run cannot add a second one).
    assert len(purifications) == crops, (len(purifications), crops)
    assert all(p.status in PurifyStatus.FINAL for p in purifications)
    attempts = sum(p.attempts for p in purifications)
    reruns = sum(p.attempts > 1 for p in purifications)
    # Each fault interrupts at most the one task in flight (3 crops), which runs again once from
    # its redelivery and at most once more from the server's re-send of a late task.
    assert attempts <= crops + 2 * FACE_FRAMES * len(FAULTS), attempts
    assert reruns >= 1, "no fault landed mid-task: the test did not exercise a redelivery"
    assert len(applied) == len(FAULTS), applied
    errors = sorted({p.error for p in purifications if p.status == PurifyStatus.FAILED})
    print(
        f"\n{CHECKS} checks in {elapsed:.1f} s: {purified} frames purified, {failed} failed {errors}; "
        f"{len(purifications)} crops, {attempts} attempts ({reruns} crops re-run); faults: {applied}"
    )
