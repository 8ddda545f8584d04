"""The Fetcher end to end against servers on 127.0.0.1 (explicitly allowed, pair by pair).

Redirect limits, streaming size cap, no decompression, timeouts, ranges and error mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from server.errors import PayloadTooLarge
from server.media.fetch import Fetcher
from server.media.netguard import FetchFailed, FetchPolicy, FetchRefused
from server.media.resolver import StaticResolver
from server.media.source import GrowingFile
from tests.security.conftest import Canary

BODY = bytes(range(256)) * 64  # 16 KiB, every byte value


def _policy(*ports: int, **changes: object) -> FetchPolicy:
    """Default policy plus (127.0.0.1, port) allowed for each of ``ports``."""
    return FetchPolicy(allow_hosts=frozenset(("127.0.0.1", p) for p in ports), **changes)  # type: ignore[arg-type]


async def _read(fetcher: Fetcher, url: str, **kw: object) -> tuple[int, bytes]:
    """Status and whole body of ``url``."""
    async with await fetcher.open(url, **kw) as response:  # type: ignore[arg-type]
        return response.status, b"".join([c async for c in response.iter_chunks(4096)])


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve(aiohttp_server) -> Callable[[dict[str, Handler]], Awaitable[int]]:
    """Start an aiohttp app on 127.0.0.1 with the given GET routes; returns its port."""

    async def start(routes: dict[str, Handler]) -> int:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        return (await aiohttp_server(app, host="127.0.0.1")).port

    return start


@contextlib.asynccontextmanager
async def _raw_server(respond: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[int]:
    """A bare TCP server on 127.0.0.1 that answers each request with ``respond`` (for lying servers)."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# -- allowed fetches -----------------------------------------------------------------------------


async def test_allowed_pair_fetches_with_identity_and_host_header(serve) -> None:
    seen: list[dict[str, str]] = []

    async def video(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        return web.Response(body=BODY, content_type="video/mp4")

    port = await serve({"/v.mp4": video})
    resolver = StaticResolver({"cdn.test": ["127.0.0.1"]})
    async with (
        Fetcher(_policy(port), resolver) as fetcher,
        await fetcher.open(f"http://cdn.test:{port}/v.mp4") as response,
    ):
        assert (response.status, response.content_type, response.content_length) == (
            200,
            "video/mp4",
            len(BODY),
        )
        assert b"".join([c async for c in response.iter_chunks(1000)]) == BODY
        assert response.bytes_read == len(BODY)
        assert response.url == f"http://cdn.test:{port}/v.mp4"
    assert seen[0]["Accept-Encoding"] == "identity"
    assert seen[0]["Host"] == f"cdn.test:{port}"  # the name is kept for Host (and for TLS SNI)
    assert "Cookie" not in seen[0] and "Authorization" not in seen[0]


async def test_pair_not_allowed_is_refused(serve) -> None:
    port = await serve({"/": _ok})
    async with Fetcher(_policy(port + 1 if port < 65535 else port - 1)) as fetcher:
        with pytest.raises(FetchRefused, match=f"port {port} is not allowed"):
            await fetcher.open(f"http://127.0.0.1:{port}/")
    async with Fetcher(_policy(port, allowed_ports=frozenset({80, 443, port}))) as fetcher:
        with pytest.raises(FetchRefused, match="address ::1 is not public"):
            await fetcher.open(f"http://[::1]:{port}/")


async def _ok(request: web.Request) -> web.Response:
    """A tiny 200."""
    return web.Response(body=b"ok")


# -- redirects -----------------------------------------------------------------------------------


@pytest.fixture
async def chain(serve) -> int:
    """/hop/N redirects to /hop/N-1 (relative), /hop/0 is the video; sets a cookie on every hop."""

    async def hop(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=f"cookie={request.headers.get('Cookie')}".encode())
        response = web.Response(status=307 if n % 2 else 302, headers={"Location": f"/hop/{n - 1}"})
        response.set_cookie("session", "secret")
        return response

    async def to(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": request.query["url"]})

    async def no_location(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302)

    app_routes = {"/hop/{n}": hop, "/to": to, "/no-location": no_location}
    return await serve(app_routes)


@pytest.mark.parametrize("hops", [0, 1, 3])
async def test_redirects_up_to_three_are_followed(chain: int, hops: int) -> None:
    async with Fetcher(_policy(chain)) as fetcher:
        status, body = await _read(fetcher, f"http://127.0.0.1:{chain}/hop/{hops}")
    assert (status, body) == (200, b"cookie=None")  # cookies set on a hop are not replayed


async def test_fourth_redirect_is_refused(chain: int) -> None:
    async with Fetcher(_policy(chain)) as fetcher:
        with pytest.raises(FetchRefused, match=r"too many redirects \(max 3\)") as info:
            await fetcher.open(f"http://127.0.0.1:{chain}/hop/4")
    assert info.value.details["rule"] == "redirects"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://127.0.0.1:{C}/", "not allowed"),
        ("file:///etc/passwd", r"scheme 'file' is not http\(s\)"),
        ("gopher://127.0.0.1:{C}/_x", r"scheme 'gopher' is not http\(s\)"),
    ],
    ids=["other-loopback-port", "file", "gopher"],
)
async def test_redirect_out_of_bounds_is_refused(
    chain: int, canary: Canary, target: str, message: str
) -> None:
    location = quote(target.replace("{C}", str(canary.port)), safe="")
    async with Fetcher(_policy(chain)) as fetcher:
        with pytest.raises(FetchRefused, match=f"redirect 1 refused: .*{message}"):
            await fetcher.open(f"http://127.0.0.1:{chain}/to?url={location}")
    assert canary.connections == []


async def test_redirect_without_location_fails(chain: int) -> None:
    async with Fetcher(_policy(chain)) as fetcher:
        with pytest.raises(FetchFailed, match="without a Location"):
            await fetcher.open(f"http://127.0.0.1:{chain}/no-location")


# -- upstream errors -----------------------------------------------------------------------------


async def test_http_error_status_is_fetch_failed(serve) -> None:
    port = await serve({"/gone": _gone})
    async with Fetcher(_policy(port)) as fetcher:
        with pytest.raises(FetchFailed, match=r"HTTP 404 from upstream 127\.0\.0\.1") as info:
            await fetcher.open(f"http://127.0.0.1:{port}/gone")
    body = info.value.to_dict()["error"]
    assert (info.value.status, body["code"], body["upstream_status"]) == (502, "fetch_failed", 404)


async def _gone(request: web.Request) -> web.Response:
    """A 404."""
    return web.Response(status=404)


async def test_reserved_headers_are_a_programming_error() -> None:
    async with Fetcher() as fetcher:
        for name in ("Host", "accept-encoding", "Cookie", "Range"):
            with pytest.raises(ValueError, match="set by the fetcher"):
                await fetcher.open("https://example.com/", headers={name: "x"})


# -- size cap ------------------------------------------------------------------------------------


async def test_announced_length_over_cap_is_refused_before_reading(serve) -> None:
    port = await serve({"/big": _big})
    async with Fetcher(_policy(port, max_bytes=1000)) as fetcher:
        with pytest.raises(PayloadTooLarge, match="16384 bytes, over the limit of 1000"):
            await fetcher.open(f"http://127.0.0.1:{port}/big")


async def _big(request: web.Request) -> web.Response:
    """BODY with its Content-Length."""
    return web.Response(body=BODY)


async def test_chunked_body_is_counted_while_streaming(serve) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(1000):  # 4 MB if nobody stops us
            await response.write(b"x" * 4096)
        return response

    port = await serve({"/chunked": endless})
    async with Fetcher(_policy(port, max_bytes=50_000)) as fetcher:
        response = await fetcher.open(f"http://127.0.0.1:{port}/chunked")
        assert response.content_length is None
        with pytest.raises(PayloadTooLarge, match="larger than 50000 bytes"):
            async for _ in response.iter_chunks(8192):
                pass
        assert response.bytes_read <= 50_000 + 8192


async def test_read_until_close_without_length_is_capped() -> None:
    async def flood(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp4\r\n\r\n")
        for _ in range(200):
            writer.write(b"y" * 8192)
            await writer.drain()

    async with _raw_server(flood) as port, Fetcher(_policy(port, max_bytes=100_000)) as fetcher:
        with pytest.raises(PayloadTooLarge):
            await _read(fetcher, f"http://127.0.0.1:{port}/")


async def test_short_content_length_never_yields_more_than_announced() -> None:
    async def liar(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n" + b"z" * 100_000)
        await writer.drain()

    async with _raw_server(liar) as port, Fetcher(_policy(port, max_bytes=1000)) as fetcher:
        try:
            assert await _read(fetcher, f"http://127.0.0.1:{port}/") == (200, b"z" * 10)
        except FetchFailed as exc:  # aiohttp may reject the trailing bytes outright: also fine
            assert "invalid HTTP response" in exc.message
            assert len(exc.message) < 300  # upstream bytes are not echoed at length


async def test_long_content_length_then_close_is_fetch_failed() -> None:
    async def liar(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"z" * 100)
        await writer.drain()

    async with _raw_server(liar) as port, Fetcher(_policy(port)) as fetcher:
        with pytest.raises(FetchFailed, match="broke off the body"):
            await _read(fetcher, f"http://127.0.0.1:{port}/")


# -- no decompression ----------------------------------------------------------------------------


async def test_compressed_response_is_refused_not_inflated(serve) -> None:
    bomb = gzip.compress(b"\0" * 1_000_000)

    async def gzipped(request: web.Request) -> web.StreamResponse:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "video/mp4"})

    port = await serve({"/gz": gzipped})
    async with Fetcher(_policy(port)) as fetcher:
        with pytest.raises(FetchFailed, match="Content-Encoding 'gzip' although identity was requested"):
            await fetcher.open(f"http://127.0.0.1:{port}/gz")


# -- timeouts ------------------------------------------------------------------------------------


async def test_server_stalling_before_headers_times_out(serve) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response()

    port = await serve({"/stall": stall})
    start = time.monotonic()
    async with Fetcher(_policy(port, read_timeout=0.3)) as fetcher:
        with pytest.raises(FetchFailed, match=r"timed out after 0\.3 s waiting for data from 127\.0\.0\.1"):
            await fetcher.open(f"http://127.0.0.1:{port}/stall")
    assert time.monotonic() - start < 2.0


async def test_server_stalling_mid_body_times_out(serve) -> None:
    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"a" * 10)
        await asyncio.sleep(30)
        return response

    port = await serve({"/half": half})
    start = time.monotonic()
    async with Fetcher(_policy(port, read_timeout=0.3)) as fetcher:
        with pytest.raises(FetchFailed, match=r"timed out after 0\.3 s waiting for data"):
            await _read(fetcher, f"http://127.0.0.1:{port}/half")
    assert time.monotonic() - start < 2.0


async def test_slow_drip_hits_the_total_timeout(serve) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(300):
            await response.write(b"d")
            await asyncio.sleep(0.05)
        return response

    port = await serve({"/drip": drip})
    start = time.monotonic()
    async with Fetcher(_policy(port, read_timeout=1.0, total_timeout=0.6)) as fetcher:
        with pytest.raises(FetchFailed, match=r"did not finish within 0\.6 s \(total timeout\)"):
            await _read(fetcher, f"http://127.0.0.1:{port}/drip")
    assert time.monotonic() - start < 2.0


async def test_connect_timeout() -> None:
    # A listener with a full accept queue drops SYNs, so connect() hangs without leaving loopback.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        start = time.monotonic()
        async with Fetcher(_policy(port, connect_timeout=0.3)) as fetcher:
            with pytest.raises(FetchFailed, match=r"timed out after 0\.3 s connecting to 127\.0\.0\.1"):
                await fetcher.open(f"http://127.0.0.1:{port}/")
        assert time.monotonic() - start < 2.0
    finally:
        for s in [*fillers, listener]:
            s.close()


async def test_connection_refused_is_fetch_failed() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    async with Fetcher(_policy(port)) as fetcher:
        with pytest.raises(FetchFailed, match=r"could not connect to 127\.0\.0\.1"):
            await fetcher.open(f"http://127.0.0.1:{port}/")


# -- ranges and spooling -------------------------------------------------------------------------


@pytest.fixture
async def file_server(serve, tmp_path: Path) -> int:
    """Serves BODY from a file with aiohttp's FileResponse, which honours Range."""
    path = tmp_path / "v.mp4"
    path.write_bytes(BODY)

    async def video(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    return await serve({"/v.mp4": video})


@pytest.mark.parametrize(
    ("rng", "expected"),
    [((100, 199), BODY[100:200]), ((16000, None), BODY[16000:])],
    ids=["closed", "open-ended"],
)
async def test_range_request_gets_206(file_server: int, rng: tuple[int, int | None], expected: bytes) -> None:
    url = f"http://127.0.0.1:{file_server}/v.mp4"
    async with Fetcher(_policy(file_server)) as fetcher, await fetcher.open(url, range=rng) as response:
        assert response.status == 206
        assert response.content_range == (rng[0], rng[0] + len(expected) - 1, len(BODY))
        assert b"".join([c async for c in response.iter_chunks()]) == expected


async def test_fetch_to_spools_into_a_growing_file(file_server: int, tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as spool:
        async with Fetcher(_policy(file_server)) as fetcher:
            response = await fetcher.fetch_to(
                spool.write, f"http://127.0.0.1:{file_server}/v.mp4", chunk_size=1000
            )
        spool.finish()
        assert response.bytes_read == len(BODY) == spool.bytes_written
        assert spool.reader().read() == BODY


async def test_fetch_to_propagates_the_spool_limit(file_server: int, tmp_path: Path) -> None:
    with GrowingFile(tmp_path, max_bytes=5000) as spool:
        async with Fetcher(_policy(file_server)) as fetcher:
            with pytest.raises(PayloadTooLarge):
                await fetcher.fetch_to(spool.write, f"http://127.0.0.1:{file_server}/v.mp4")


# -- TLS: connect to the vetted IP, verify the certificate against the name --------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for cdn.test (made with the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    args = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=cdn.test"
    args += " -addext subjectAltName=DNS:cdn.test"
    subprocess.run(["openssl", *args.split(), "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def tls_port(aiohttp_server, tls_files: tuple[Path, Path]) -> int:
    """An HTTPS server on 127.0.0.1 presenting the cdn.test certificate."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*tls_files)
    app = web.Application()
    app.router.add_get("/v.mp4", _big)
    return (await aiohttp_server(app, host="127.0.0.1", ssl=server_ctx)).port


def _client_ctx(cert: Path) -> ssl.SSLContext:
    """Client context trusting only the test certificate, hostname checks on."""
    return ssl.create_default_context(cafile=str(cert))


async def test_tls_verifies_the_name_while_connecting_to_the_vetted_ip(
    tls_port: int, tls_files: tuple[Path, Path], loopback_only
) -> None:
    resolver = StaticResolver({"cdn.test": ["127.0.0.1"]})
    async with Fetcher(_policy(tls_port), resolver, ssl_context=_client_ctx(tls_files[0])) as fetcher:
        assert await _read(fetcher, f"https://cdn.test:{tls_port}/v.mp4") == (200, BODY)
    assert loopback_only.to_port(tls_port) == [("127.0.0.1", tls_port)]


async def test_tls_certificate_for_another_name_is_fetch_failed(
    tls_port: int, tls_files: tuple[Path, Path]
) -> None:
    resolver = StaticResolver({"other.test": ["127.0.0.1"]})
    async with Fetcher(_policy(tls_port), resolver, ssl_context=_client_ctx(tls_files[0])) as fetcher:
        with pytest.raises(FetchFailed, match=r"TLS certificate of other\.test is not valid"):
            await fetcher.open(f"https://other.test:{tls_port}/v.mp4")
