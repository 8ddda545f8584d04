"""Access control over HTTP: tokens, public routes, rate limits, check caps, early body caps."""

from __future__ import annotations

import asyncio
import json
import logging
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from server import auth
from server.app import create_app
from server.auth import create_token, revoke_token
from server.auth_middleware import (
    FRAMES_BODY_BYTES,
    MULTIPART_OVERHEAD_BYTES,
    RedactingAccessLogger,
    auth_middleware,
    redacted,
)
from server.keys import sessions_key
from server.settings import Settings


@pytest.fixture
def make_api(aiohttp_client, settings: Settings):
    """A client on an app with ``auth="always"`` and the given setting changes."""

    async def make(**changes):
        return await aiohttp_client(create_app(settings.replace(**{"auth": "always", **changes})))

    return make


async def _token(api, name: str = "test", **limits) -> dict[str, str]:
    secret, _ = await create_token(api.app[sessions_key], name, **limits)
    return {"Authorization": f"Bearer {secret}"}


async def _error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"]
    return body["error"]


async def test_v1_routes_need_a_token(make_api) -> None:
    api = await make_api()
    for method, path in [
        ("GET", "/v1/models"),
        ("POST", "/v1/checks"),
        ("GET", "/v1/checks/abc"),
        ("GET", "/v1/checks/abc/events"),
        ("GET", "/v1/verdicts?sha256=" + "0" * 64),
        ("DELETE", "/v1/verdicts/abc"),
        ("GET", "/v1/no-such-route"),
    ]:
        resp = await api.request(method, path)
        await _error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_probes_and_report_page_need_no_token(make_api) -> None:
    api = await make_api(metrics_public=True)
    assert (await api.get("/healthz")).status == 200
    assert (await api.get("/readyz")).status == 200
    assert (await api.get("/metrics")).status == 200
    # The report page of an unknown check is a 404 (or no route yet), never a 401.
    assert (await api.get("/checks/0123456789abcdef")).status != 401
    private = await make_api(metrics_public=False)
    await _error(await private.get("/metrics"), 401, "unauthorized")


async def test_a_valid_token_is_accepted_and_bad_ones_are_not(make_api) -> None:
    api = await make_api()
    headers = await _token(api)
    assert (await api.get("/v1/models", headers=headers)).status == 200
    secret = headers["Authorization"].split()[1]
    for value in (f"Basic {secret}", "Bearer", f"Bearer {secret[:-2]}xx", "Bearer unm_" + "A" * 43):
        await _error(await api.get("/v1/models", headers={"Authorization": value}), 401, "unauthorized")
    # The scheme is case-insensitive (RFC 7235).
    assert (await api.get("/v1/models", headers={"Authorization": f"bearer {secret}"})).status == 200


async def test_a_revoked_token_is_refused_within_the_cache_ttl(make_api, monkeypatch) -> None:
    monkeypatch.setattr(auth, "VERIFY_CACHE_TTL_S", 0.3)
    api = await make_api()
    headers = await _token(api, "soon-revoked")
    assert (await api.get("/v1/models", headers=headers)).status == 200
    await revoke_token(api.app[sessions_key], "soon-revoked")
    await asyncio.sleep(0.35)
    await _error(await api.get("/v1/models", headers=headers), 401, "unauthorized")


async def test_query_token_is_accepted_only_by_the_events_route(make_api) -> None:
    api = await make_api()
    secret = (await _token(api))["Authorization"].split()[1]
    # Authenticated, then the unknown check is a 404: the token in the query was accepted.
    await _error(await api.get(f"/v1/checks/nope/events?access_token={secret}"), 404, "not_found")
    await _error(await api.get(f"/v1/checks/nope?access_token={secret}"), 401, "unauthorized")
    await _error(await api.get(f"/v1/models?access_token={secret}"), 401, "unauthorized")
    await _error(await api.get("/v1/checks/nope/events?access_token=unm_bad"), 401, "unauthorized")


async def test_loopback_auto_mode_is_open_but_checks_a_presented_token(aiohttp_client, settings) -> None:
    api = await aiohttp_client(create_app(settings.replace(auth="auto", host="127.0.0.1")))
    assert (await api.get("/v1/models")).status == 200
    await _error(await api.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    public = await aiohttp_client(create_app(settings.replace(auth="auto", host="0.0.0.0")))
    await _error(await public.get("/v1/models"), 401, "unauthorized")


async def test_rate_limit_answers_429_with_retry_after_once_the_burst_is_spent(make_api) -> None:
    api = await make_api(rate_per_minute=60, rate_burst=3)
    headers = await _token(api, "a")
    for _ in range(3):
        assert (await api.get("/v1/models", headers=headers)).status == 200
    resp = await api.get("/v1/models", headers=headers)
    error = await _error(resp, 429, "rate_limited")
    assert resp.headers["Retry-After"] == "1" == str(error["retry_after_s"])
    # Another token has its own bucket; a token's own rate overrides the default.
    other = await _token(api, "b", rate_per_minute=1)
    assert (await api.get("/v1/models", headers=other)).status == 200
    for _ in range(2):
        await api.get("/v1/models", headers=other)
    resp = await api.get("/v1/models", headers=other)
    await _error(resp, 429, "rate_limited")
    assert 55 <= int(resp.headers["Retry-After"]) <= 60


async def _open_frames_check(api, headers) -> aiohttp.ClientResponse:
    return await api.post("/v1/checks", json={"source": "frames"}, headers=headers)


async def test_running_checks_are_capped_per_token_until_one_ends(make_api) -> None:
    api = await make_api(max_concurrent_checks_per_token=1, rate_burst=1000)
    headers = await _token(api, "one")
    first = await _open_frames_check(api, headers)
    assert first.status == 202, await first.text()
    check_id = (await first.json())["id"]
    resp = await _open_frames_check(api, headers)
    error = await _error(resp, 429, "too_many_checks")
    assert int(resp.headers["Retry-After"]) > 0 and error["limit"] == 1
    # A token with its own, larger cap is not held back by the first one.
    two = await _token(api, "two", max_concurrent_checks=2)
    assert [(await _open_frames_check(api, two)).status for _ in range(3)] == [202, 202, 429]
    # Ending the first check gives its slot back.
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("final", "1")
    resp = await api.post(f"/v1/checks/{check_id}/frames", data=form, headers=headers)
    assert resp.status == 200, await resp.text()
    for _ in range(100):
        resp = await _open_frames_check(api, headers)
        if resp.status == 202:
            break
        assert resp.status == 429
        await asyncio.sleep(0.05)
    assert resp.status == 202


async def _raw(api, request_head: str) -> tuple[int, dict]:
    """Send only a request head (no body) and read the answer: proves nothing waited for the body."""
    url = api.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request_head.replace("\n", "\r\n").encode() + b"\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 5)
        return status, json.loads(body)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("path", "content_type", "cap"),
    [
        ("/v1/checks", "multipart/form-data; boundary=x", 1024 * 1024 + MULTIPART_OVERHEAD_BYTES),
        ("/v1/checks", "application/json", 64 * 1024),
        ("/v1/checks/abc/frames", "multipart/form-data; boundary=x", FRAMES_BODY_BYTES),
        ("/v1/verdicts/lookup", "application/json", 64 * 1024),
    ],
)
async def test_announced_body_over_the_cap_is_413_before_the_body_is_read(
    make_api, path: str, content_type: str, cap: int
) -> None:
    api = await make_api(max_upload_bytes=1024 * 1024)
    auth_header = (await _token(api))["Authorization"]
    head = f"POST {path} HTTP/1.1\nHost: test\nAuthorization: {auth_header}\nContent-Type: {content_type}\n"
    status, body = await _raw(api, head + f"Content-Length: {cap + 1}\n")
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert body["error"]["limit"] == cap
    # Without a token the answer is 401, also before the body.
    status, body = await _raw(api, f"POST {path} HTTP/1.1\nHost: test\nContent-Length: {cap + 1}\n")
    assert status == 401


async def test_compressed_request_bodies_are_refused(make_api) -> None:
    api = await make_api()
    headers = {**(await _token(api)), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    resp = await api.post("/v1/verdicts/lookup", data=b"\x1f\x8b\x08\x00", headers=headers)
    await _error(resp, 415, "unsupported_content_encoding")


async def test_anonymous_remote_clients_are_limited_per_ip() -> None:
    settings = Settings(auth="never", rate_per_minute=60, rate_burst=2)
    middleware = auth_middleware(settings)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def request_from(ip: str) -> web.Request:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            (ip, 40000) if name == "peername" else default
        )
        return make_mocked_request("GET", "/v1/models", transport=transport)

    statuses = [(await middleware(request_from("203.0.113.7"), handler)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert (await middleware(request_from("203.0.113.8"), handler)).status == 200
    # The embedded server's local user is never throttled.
    assert {(await middleware(request_from("127.0.0.1"), handler)).status for _ in range(5)} == {200}


def test_access_log_never_contains_a_query_token(caplog) -> None:
    secret = "unm_" + "s" * 43
    url = URL(f"/v1/checks/abc/events?x=1&access_token={secret}")
    assert secret not in redacted(url) and "access_token=REDACTED" in redacted(url)
    assert redacted(URL("/v1/models?x=1")) == "/v1/models?x=1"
    logger = logging.getLogger("test.access")
    request = make_mocked_request("GET", str(url))
    with caplog.at_level(logging.INFO, logger="test.access"):
        RedactingAccessLogger(logger, "").log(request, web.Response(status=200), 0.01)
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)
    assert "/v1/checks/abc/events" in caplog.records[0].getMessage()
