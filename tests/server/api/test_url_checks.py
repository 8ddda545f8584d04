"""Checks by URL: fetched through the SSRF-safe client from a local server the test allows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@pytest.fixture
async def media_server(media_dir: Path):
    """A local HTTP server with a video, a slow video, an HTML page and a 404."""
    video = (media_dir / "face.mp4").read_bytes()

    async def mp4(request: web.Request) -> web.Response:
        return web.Response(body=video, content_type="video/mp4")

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await resp.prepare(request)
        for i in range(0, len(video), 16384):
            await resp.write(video[i : i + 16384])
            await asyncio.sleep(0.05)
        return resp

    async def html(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>not a video</title>" + " " * 200, content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/face.mp4", mp4)
    app.router.add_get("/slow.mp4", slow)
    app.router.add_get("/page.html", html)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def url_api(aiohttp_client, settings, media_server):
    from server.app import create_app

    allowed = settings.replace(fetch_allow_hosts=f"127.0.0.1:{media_server.port}")
    return await aiohttp_client(create_app(allowed))


async def _done(api, check_id: str) -> dict:
    for _ in range(600):
        body = await (await api.get(f"/v1/checks/{check_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError("check did not finish")


async def test_url_check_then_cache_hit_with_tracking_params(url_api, media_server) -> None:
    url = f"http://127.0.0.1:{media_server.port}/face.mp4"
    resp = await url_api.post("/v1/checks", json={"url": url, "page_url": "https://example.com/post/1"})
    assert resp.status == 202, await resp.text()
    body = await _done(url_api, (await resp.json())["id"])
    assert body["status"] == "done" and body["source"] == "url"
    assert body["verdict"]["frames_analyzed"] == 6
    kinds = {k["kind"] for k in body["verdict"]["keys"]}
    assert {"url", "sha256", "frames"} <= kinds
    again = await url_api.post("/v1/checks", json={"url": url + "?utm_source=feed&fbclid=x"})
    assert again.status == 200
    cached = await again.json()
    assert cached["verdict"]["cached"] is True and cached["id"] == body["id"]
    resp = await url_api.get("/v1/verdicts", params={"url": url})
    assert resp.status == 200


async def test_concurrent_requests_for_one_url_join_one_check(url_api, media_server) -> None:
    url = f"http://127.0.0.1:{media_server.port}/slow.mp4"
    first, second = await asyncio.gather(
        url_api.post("/v1/checks", json={"url": url}), url_api.post("/v1/checks", json={"url": url})
    )
    a, b = await first.json(), await second.json()
    assert {first.status, second.status} == {202}
    assert a["id"] == b["id"]
    assert a.get("joined") or b.get("joined")
    assert (await _done(url_api, a["id"]))["status"] == "done"


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        pytest.param("http://10.0.0.1/v.mp4", 400, "url_refused", id="private"),
        pytest.param("http://169.254.169.254/latest/meta-data/", 400, "url_refused", id="metadata"),
        pytest.param("http://127.0.0.1:9/v.mp4", 400, "url_refused", id="loopback-other-port"),
        pytest.param("file:///etc/passwd", 400, "invalid_field", id="file-scheme"),
        pytest.param("http://user:pw@example.com/v.mp4", 400, "url_refused", id="userinfo"),
    ],
)
async def test_refused_urls(url_api, url: str, status: int, code: str) -> None:
    resp = await url_api.post("/v1/checks", json={"url": url})
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error"]["code"] == code


async def test_upstream_errors_and_non_video(url_api, media_server) -> None:
    base = f"http://127.0.0.1:{media_server.port}"
    resp = await url_api.post("/v1/checks", json={"url": f"{base}/missing.mp4"})
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "fetch_failed"
    resp = await url_api.post("/v1/checks", json={"url": f"{base}/page.html"})
    error = (await resp.json())["error"]
    assert resp.status == 422 and error["code"] == "unsupported_site" and "HTML" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-url"),
        pytest.param({"url": 5}, id="url-not-string"),
        pytest.param([1, 2], id="not-object"),
        pytest.param({"url": "https://example.com/" + "a" * 3000}, id="too-long"),
    ],
)
async def test_bad_json_bodies(url_api, body) -> None:
    resp = await url_api.post("/v1/checks", json=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_field"
