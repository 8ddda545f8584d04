"""Start-up recovery: checks a crashed run left active end with exactly one outcome."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from server.db import repo
from server.db.engine import create_engine, session_factory
from server.db.models import Frame, Verdict
from server.recovery import spool_path
from server.settings import Settings

CARD = {"model_id": "test-tiny", "model_version": "0.0.1"}


@pytest.fixture
async def media_server(media_dir: Path):
    """The video a URL check was fetching when the server died; other paths are 404."""
    video = (media_dir / "face.mp4").read_bytes()

    async def mp4(request: web.Request) -> web.Response:
        return web.Response(body=video, content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/face.mp4", mp4)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def _crashed_run(settings: Settings, media_dir: Path, media_port: int) -> dict[str, str]:
    """The database and spool folder as a server killed mid-check leaves them."""
    engine = create_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    video = media_dir / "face.mp4"
    spool = spool_path(settings.data_dir, "a" * 32)
    spool.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(video, spool)
    common = {**CARD, "owner": settings.instance_id, "status": "running"}
    await repo.create_check(
        sessions,
        id="a" * 32,
        source="upload",
        container="mp4",
        size_bytes=video.stat().st_size,
        sha256=hashlib.sha256(video.read_bytes()).hexdigest(),
        **common,
    )
    stale = {"t": 0.0, "score": 0.9, "boxes": [], "face_scores": [], "tamper": None, "phash": None}
    await repo.add_frames(sessions, "a" * 32, [{"index": 0, **stale}])  # from the interrupted run
    await repo.create_check(sessions, id="b" * 32, source="upload", container="mp4", **common)  # cut off
    base = f"http://127.0.0.1:{media_port}"
    await repo.create_check(sessions, id="c" * 32, source="url", source_url=f"{base}/face.mp4", **common)
    await repo.add_frames(sessions, "c" * 32, [{"index": 0, **stale}])  # from the interrupted run
    await repo.create_check(sessions, id="9" * 32, source="url", source_url=f"{base}/gone.mp4", **common)
    await repo.create_check(sessions, id="d" * 32, source="frames", **{**common, "status": "receiving"})
    frames = [{"index": i, **stale, "t": i * 0.5, "score": 0.2} for i in range(3)]
    await repo.add_frames(sessions, "d" * 32, frames)
    other = {**common, "owner": "another-server"}
    await repo.create_check(sessions, id="e" * 32, source="upload", container="mp4", **other)
    spool_path(settings.data_dir, "f" * 32).write_bytes(b"left over")  # no check claims it
    await engine.dispose()
    return {
        "upload": "a" * 32,
        "cut": "b" * 32,
        "url": "c" * 32,
        "url_gone": "9" * 32,
        "frames": "d" * 32,
        "other": "e" * 32,
    }


async def _wait_finished(api, check_id: str, timeout: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await (await api.get(f"/v1/checks/{check_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"check still {body['status']}"
        await asyncio.sleep(0.1)


async def test_restart_recovers_every_interrupted_check(
    aiohttp_client, settings: Settings, media_dir: Path, media_server
) -> None:
    from server.app import create_app

    settings = settings.replace(fetch_allow_hosts=f"127.0.0.1:{media_server.port}")
    ids = await _crashed_run(settings, media_dir, media_server.port)
    api = await aiohttp_client(create_app(settings))

    upload = await _wait_finished(api, ids["upload"])
    assert upload["status"] == "done", upload
    assert upload["verdict"]["frames_analyzed"] == 6  # the whole 3 s video again, at 2 frames/s
    cut = await _wait_finished(api, ids["cut"])
    assert cut["status"] == "failed" and "upload the video again" in cut["error"]["message"]
    url = await _wait_finished(api, ids["url"])
    assert url["status"] == "done", url  # accepted with 202 before the crash: fetched again
    assert url["verdict"]["frames_analyzed"] == 6
    gone = await _wait_finished(api, ids["url_gone"])
    assert gone["status"] == "failed", gone
    assert "fetching the URL again after a server restart failed" in gone["error"]["message"]
    assert "404" in gone["error"]["message"], gone["error"]
    frames = await _wait_finished(api, ids["frames"])
    assert frames["status"] == "done" and frames["verdict"]["frames_analyzed"] == 3, frames
    other = await (await api.get(f"/v1/checks/{ids['other']}")).json()
    assert other["status"] == "running", "another server's checks are not ours to recover"

    engine = create_engine(settings.resolved_database_url)
    async with session_factory(engine)() as s:
        for kind in ("upload", "url"):
            verdicts = await s.scalar(
                select(func.count()).select_from(Verdict).where(Verdict.check_id == ids[kind])
            )
            indexes = (
                (await s.execute(select(Frame.index).where(Frame.check_id == ids[kind]))).scalars().all()
            )
            assert verdicts == 1, kind
            assert sorted(indexes) == list(range(6)), f"{kind}: the interrupted run's frames are replaced"
    await engine.dispose()
    cached = await api.get("/v1/verdicts", params={"url": f"http://127.0.0.1:{media_server.port}/face.mp4"})
    assert cached.status == 200 and (await cached.json())["check_id"] == ids["url"]
    assert not any(spool_path(settings.data_dir, ids["upload"]).parent.glob("check-*.upload"))


async def test_upload_spool_is_named_by_check_and_removed_at_the_end(
    api, settings: Settings, media_dir: Path
) -> None:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field(
        "video", (media_dir / "face.mp4").read_bytes(), filename="face.mp4", content_type="video/mp4"
    )
    resp = await api.post("/v1/checks", data=form)
    assert resp.status == 202, await resp.text()
    check_id = (await resp.json())["id"]
    body = await _wait_finished(api, check_id)
    assert body["status"] == "done"
    await asyncio.sleep(0.1)
    assert not spool_path(settings.data_dir, check_id).exists()
