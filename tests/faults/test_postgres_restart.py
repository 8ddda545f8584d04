"""PostgreSQL restarted under running checks: the server carries on without a restart of its own.

A private cluster (never the shared 5432) is stopped with ``-m fast`` — every session is
terminated, as a restart or fail-over does — while URL and upload checks run, kept down while
frames arrive, then started again. Every accepted check ends with exactly one verdict, and new
requests work on the same server process.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from server.db.engine import create_engine, is_transient, retry_db, session_factory
from server.db.migrate import upgrade
from server.db.models import Verdict
from server.settings import Settings
from tests.faults.conftest import distinct_video

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(240)]

URL_CHECKS = 2
UPLOADS = 6
DOWN_S = 2.0
TIMEOUT_S = 150.0


async def _status(api, check_id: str) -> dict:
    resp = await api.get(f"/v1/checks/{check_id}")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def _wait_finished(api, ids: list[str]) -> dict[str, dict]:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    out: dict[str, dict] = {}
    while len(out) < len(ids):
        for check_id in ids:
            if check_id not in out:
                body = await _status(api, check_id)
                if body["status"] in ("done", "failed"):
                    out[check_id] = body
        assert asyncio.get_running_loop().time() < deadline, f"{len(out)} of {len(ids)} checks finished"
        await asyncio.sleep(0.2)
    return out


async def _upload(api, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("video", data, filename="v.mp4", content_type="video/mp4")
    resp = await api.post("/v1/checks", data=form)
    assert resp.status == 202, await resp.text()
    return (await resp.json())["id"]


async def test_postgres_restart_mid_run(
    aiohttp_client,
    own_postgres,
    held_media,
    tiny_checkpoint: Path,
    media_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from server.app import create_app

    caplog.set_level(logging.WARNING, logger="server.db.engine")
    media, gate = held_media.server, held_media.release
    url = own_postgres.create_database("unmask")
    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        model_dir=tiny_checkpoint,
        device="cpu",
        op_threads=1,
        max_running_checks=URL_CHECKS + 2,
        instance_id="test-pg-restart",
        fetch_allow_hosts=f"127.0.0.1:{media.port}",
    )
    api = await aiohttp_client(create_app(settings))
    video = (media_dir / "face.mp4").read_bytes()

    # URL checks hold their first part (and frames from it), uploads queue behind them.
    ids = []
    for i in range(URL_CHECKS):
        resp = await api.post("/v1/checks", json={"url": held_media.url(i)})
        assert resp.status == 202, await resp.text()
        ids.append((await resp.json())["id"])
    ids += [await _upload(api, distinct_video(video, 100 + i)) for i in range(UPLOADS)]
    while not all([(await _status(api, i))["frames_analyzed"] for i in ids[:URL_CHECKS]]):
        await asyncio.sleep(0.1)
    in_flight = sum([(await _status(api, i))["status"] not in ("done", "failed") for i in ids])

    await asyncio.to_thread(own_postgres.stop)  # every pooled connection is now dead
    gate.set()  # the URL checks' remaining frames arrive while the database is down
    down = await api.get("/readyz")
    assert down.status == 503, await down.text()
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(own_postgres.start)

    finished = await _wait_finished(api, ids)
    assert {b["status"] for b in finished.values()} == {"done"}, {
        i: b.get("error") for i, b in finished.items() if b["status"] != "done"
    }
    assert all(b["verdict"]["frames_analyzed"] == 6 for b in finished.values()), [
        b["verdict"]["frames_analyzed"] for b in finished.values()
    ]
    assert in_flight >= URL_CHECKS
    assert any("database unreachable or busy" in r.getMessage() for r in caplog.records), (
        "no write met the outage; the test did not exercise the retry"
    )

    # The same server process takes new work on fresh connections.
    assert (await api.get("/readyz")).status == 200
    after = await _upload(api, distinct_video(video, 999))
    ids.append(after)
    assert (await _wait_finished(api, [after]))[after]["status"] == "done"
    cached = await api.get("/v1/verdicts", params={"url": held_media.url(0)})
    assert cached.status == 200, await cached.text()

    engine = create_engine(url)
    async with session_factory(engine)() as s:
        rows = (
            await s.execute(
                select(Verdict.check_id, func.count())
                .where(Verdict.check_id.in_(ids))
                .group_by(Verdict.check_id)
            )
        ).all()
    await engine.dispose()
    assert dict(rows) == dict.fromkeys(ids, 1), "exactly one verdict per accepted check"


async def test_retry_db_repeats_only_lost_connections() -> None:
    calls: list[int] = []

    async def refused_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connect call failed")
        return "written"

    assert await retry_db(refused_twice) == "written" and len(calls) == 3

    async def constraint() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    calls.clear()
    with pytest.raises(IntegrityError):
        await retry_db(constraint)
    assert len(calls) == 1, "a statement error is not retried"

    async def always_refused() -> None:
        calls.append(1)
        raise ConnectionRefusedError(111, "Connect call failed")

    calls.clear()
    with pytest.raises(ConnectionRefusedError):
        await retry_db(always_refused, deadline_s=0.5)
    assert len(calls) > 1


def test_a_locked_sqlite_file_is_transient() -> None:
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert is_transient(locked)
    assert not is_transient(OperationalError("INSERT", {}, sqlite3.OperationalError("no such table: x")))
