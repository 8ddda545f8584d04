"""The server process is killed (-9) with an accepted URL check mid-fetch; the next start fetches it
again under the same id and it ends with exactly one verdict."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.faults.conftest import _free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

READY_S = 90.0
DONE_S = 90.0


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--no-worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 takes the decoder zygote too
        )


async def _ready(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + READY_S
    while asyncio.get_running_loop().time() < deadline:
        assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
        try:
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    pytest.fail(f"server not ready in {READY_S} s: {log.read_text()[-3000:]}")


async def _check(http: aiohttp.ClientSession, base: str, check_id: str) -> dict:
    async with http.get(f"{base}/v1/checks/{check_id}") as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_url_check_accepted_before_a_crash_is_fetched_again(
    held_media, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    release, fetches = held_media.release, held_media.fetches
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "UNMASK_DATA_DIR": str(tmp_path / "data"),
        "UNMASK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unmask.sqlite3'}",
        "UNMASK_MODEL_DIR": str(tiny_checkpoint),
        "UNMASK_PORT": str(port),
        "UNMASK_DEVICE": "cpu",
        "UNMASK_OP_THREADS": "1",
        "UNMASK_INSTANCE_ID": "crash-test",
        "UNMASK_FETCH_ALLOW_HOSTS": f"127.0.0.1:{held_media.server.port}",
        "UNMASK_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "server.log"
    url = held_media.url(0)
    server = _serve(env, log)
    try:
        async with aiohttp.ClientSession() as http:
            await _ready(http, base, server, log)
            async with http.post(f"{base}/v1/checks", json={"url": url}) as r:
                assert r.status == 202, await r.text()
                check_id = (await r.json())["id"]
            while not (await _check(http, base, check_id))["frames_analyzed"]:
                await asyncio.sleep(0.1)
            assert (await _check(http, base, check_id))["status"] == "running"

            os.killpg(server.pid, signal.SIGKILL)  # no shutdown handler runs
            server.wait(30)
            release.set()  # the upstream answers in full from now on

            server = _serve(env, log)
            await _ready(http, base, server, log)
            deadline = asyncio.get_running_loop().time() + DONE_S
            while (body := await _check(http, base, check_id))["status"] not in ("done", "failed"):
                assert asyncio.get_running_loop().time() < deadline, body
                await asyncio.sleep(0.2)
            assert body["status"] == "done", body
            assert body["verdict"]["frames_analyzed"] == 6, "the crashed run's frames are replaced"
            assert fetches == ["/0.mp4", "/0.mp4"], "fetched once before the crash and once after"
            async with http.get(f"{base}/v1/verdicts", params={"url": url}) as r:
                assert r.status == 200 and (await r.json())["check_id"] == check_id
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
