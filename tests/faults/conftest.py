"""A private Redis and a private PostgreSQL per test (never the shared 6379 / 5432): fault tests
stop and restart them."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.worker.conftest import workers  # noqa: F401 - the worker-subprocess fixture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OwnRedis:
    """A redis-server subprocess with an append-only file, so a restart keeps queued tasks."""

    port: int
    directory: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: redis flushes its append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A private Redis on a free port, stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = OwnRedis(_free_port(), directory)
    server.start()
    yield server
    server.stop()


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of its own (initdb in a temporary folder, trust auth, a free port).

    initdb and the server refuse to run as root, so as root they run as the ``postgres`` user.
    """

    bin: Path
    port: int
    directory: Path

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = (self.directory / "pg.log").read_text() if (self.directory / "pg.log").exists() else ""
            pytest.fail(f"{' '.join(args[:1])} failed: {done.stdout}{done.stderr}{log[-2000:]}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "pg.log"), "-w", "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: every session is terminated at once (what a restart or fail-over does to clients)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def create_database(self, name: str) -> str:
        self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-c",
            f'CREATE DATABASE "{name}"',
        )
        return self.url(name)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A private PostgreSQL on a free port, stopped and removed at the end."""
    pg_bin = _pg_bin()
    if pg_bin is None or not (pg_bin / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="unmask-own-pg-"))
    directory.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    server = OwnPostgres(pg_bin, _free_port(), directory)
    server.init()
    server.start()
    try:
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def distinct_video(video: bytes, i: int) -> bytes:
    """The same MP4 with a trailing ``free`` box: valid, but a different file (no cache hit)."""
    return video + (12).to_bytes(4, "big") + b"free" + i.to_bytes(4, "big")


@dataclass
class HeldMedia:
    """A loopback server of ``/{i}.mp4`` (the face video made distinct by ``i``) whose last fifth
    waits for ``release``: a check fetching it is surely mid-run. ``fetches`` lists the paths asked."""

    server: TestServer
    release: asyncio.Event
    fetches: list[str]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.server.port}/{i}.mp4"


@pytest.fixture
async def held_media(media_dir: Path) -> AsyncIterator[HeldMedia]:
    video = (media_dir / "face.mp4").read_bytes()
    release = asyncio.Event()
    fetches: list[str] = []

    async def held(request: web.Request) -> web.StreamResponse:
        fetches.append(request.path)
        body = distinct_video(video, int(request.match_info["i"]))
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(len(body))})
        await resp.prepare(request)
        cut = len(body) * 4 // 5
        await resp.write(body[:cut])
        await release.wait()
        await resp.write(body[cut:])
        return resp

    app = web.Application()
    app.router.add_get("/{i}.mp4", held)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield HeldMedia(server, release, fetches)
    release.set()
    await server.close()
