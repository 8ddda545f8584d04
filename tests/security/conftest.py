"""Loopback-only plumbing for the SSRF tests: a connect guard, a canary server, an origin server.

Every test here runs under ``loopback_only``: a connect to anything but a loopback address fails
the test *before* the packet is sent, so even a bug in the fetcher cannot reach the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web


@dataclass
class ConnectLog:
    """Every (address, port) a test tried to connect to."""

    attempts: list[tuple[str, int]] = field(default_factory=list)

    def to_port(self, port: int) -> list[tuple[str, int]]:
        """Attempts that targeted ``port`` (on any address)."""
        return [a for a in self.attempts if a[1] == port]


@pytest.fixture(autouse=True)
async def loopback_only(monkeypatch: pytest.MonkeyPatch) -> ConnectLog:
    """Refuse (as a test failure) any socket connect outside 127.0.0.0/8 and ::1."""
    loop = asyncio.get_running_loop()
    original = loop.sock_connect
    log = ConnectLog()

    async def guarded(sock: socket.socket, address: tuple) -> None:
        host, port = address[0], address[1]
        log.attempts.append((host, port))
        if not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
            raise AssertionError(f"test tried to connect to non-loopback {host}:{port}")
        await original(sock, address)

    monkeypatch.setattr(loop, "sock_connect", guarded)
    return log


@dataclass
class Canary:
    """A server on one port of 127.0.0.1, 127.0.0.2 and ::1 that counts connections."""

    port: int
    connections: list[str] = field(default_factory=list)


_CANARY_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary"


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    """The canary: it must see zero connections from refused fetches."""
    result = Canary(port=0)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        result.connections.append(str(writer.get_extra_info("sockname")))
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(_CANARY_RESPONSE)
            await writer.drain()
        writer.close()

    first = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    result.port = first.sockets[0].getsockname()[1]
    servers = [first]
    for extra in ("127.0.0.2", "::1"):
        # Same port on the other loopback spellings, when the kernel has them free.
        with contextlib.suppress(OSError):
            servers.append(await asyncio.start_server(on_connect, extra, result.port))
    try:
        yield result
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def _redirect(request: web.Request) -> web.StreamResponse:
    """/r?to=X: 302 to X, as given."""
    return web.Response(status=302, headers={"Location": request.query["to"]})


async def _hello(request: web.Request) -> web.StreamResponse:
    """/: a small body."""
    return web.Response(body=b"hello", content_type="video/mp4")


@pytest.fixture
async def origin(aiohttp_server) -> int:
    """An allowed upstream on 127.0.0.1 (``/`` body, ``/r?to=`` redirects); returns its port."""
    app = web.Application()
    app.router.add_get("/", _hello)
    app.router.add_get("/r", _redirect)
    server = await aiohttp_server(app, host="127.0.0.1")
    return server.port
