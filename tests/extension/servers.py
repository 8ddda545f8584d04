"""The two servers the browser tests talk to: a static test-page server and the real ``unmask`` server."""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = Path(__file__).resolve().parent / "pages"

# The real server loads torch and the model before /readyz answers; the machine may be busy.
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ``?slow`` on a media URL: the body trickles out, so a check of it surely takes a few seconds.
SLOW_CHUNK = 16 * 1024
SLOW_PAUSE_S = 0.4


class _Handler(BaseHTTPRequestHandler):
    """GET of /<page>.html and /media/<file>, with single byte ranges (media elements use them)."""

    server: _StaticServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _path(self) -> Path | None:
        name = self.path.split("?", 1)[0].lstrip("/")
        root, _, rest = name.partition("/")
        base, rel = (self.server.media, rest) if root == "media" else (PAGES, name)
        target = (base / rel).resolve()
        return target if target.is_file() and target.is_relative_to(base.resolve()) else None

    def do_GET(self) -> None:
        path = self._path()
        if path is None:
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end, status = 0, len(data) - 1, 200
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes=") and "," not in spec:
            first, _, last = spec[6:].partition("-")
            if first:
                start, end = int(first), min(int(last) if last else end, end)
            elif last:
                start = max(0, len(data) - int(last))
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-store")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        body = data[start : end + 1]
        step = SLOW_CHUNK if "slow" in self.path.partition("?")[2] else len(body) or 1
        with contextlib.suppress(ConnectionError):
            for at in range(0, len(body), step):
                self.wfile.write(body[at : at + step])
                if step < len(body):
                    self.wfile.flush()
                    time.sleep(SLOW_PAUSE_S)


class _StaticServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, media: Path) -> None:
        self.media = media
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # the browser drops media connections it no longer needs


@contextlib.contextmanager
def page_server(media: Path) -> Iterator[str]:
    """Serve the test pages and ``media`` on 127.0.0.1; yields the base URL."""
    server = _StaticServer(media)
    thread = threading.Thread(target=server.serve_forever, name="test-pages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def get_json(url: str, timeout: float = 5.0) -> dict:
    """GET a JSON document (raises urllib errors)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


@contextlib.contextmanager
def unmask_server(data_dir: Path, model_dir: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """Run ``python -m server serve`` (real database, real model) until the block ends; yields its URL."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("UNMASK_")}
    full_env.update({"OMP_NUM_THREADS": "1", "UNMASK_OP_THREADS": "1", "UNMASK_DEVICE": "cpu", **env})
    cmd = [sys.executable, "-m", "server", "serve", "--port", str(port), "--data-dir", str(data_dir),
           "--model-dir", str(model_dir)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"unmask server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if get_json(f"{url}/readyz", timeout=2).get("status") == "ready":
                    break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"unmask server not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
