"""Checks of social-media pages and streams through the API, against a local fake site (no internet).

The app may reach exactly the site's address and port; the canary (another port on 127.0.0.1)
must never see a connection, whatever the pages and playlists point at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.helpers.streams import Canary, StreamSite, canary_server, make_site, site_app
from tests.helpers.videos import face_frames


@pytest.fixture(scope="module")
def site_media(media_dir: Path) -> StreamSite:
    """The site's media: the suite's 3 s face MP4, and a 3 s HLS stream in two renditions."""
    frames = list(face_frames(3.0, size=(320, 240), face=160))
    return make_site((media_dir / "face.mp4").read_bytes(), frames)


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    async with canary_server() as c:
        yield c


@pytest.fixture
async def site(site_media: StreamSite, canary: Canary) -> AsyncIterator[tuple[str, StreamSite]]:
    """(base URL, site) of the fake site, served on 127.0.0.1."""
    site_media.canary_port = canary.port
    site_media.requests.clear()
    site_media.bytes_served = 0
    server = TestServer(site_app(site_media), host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", site_media
    await server.close()


@pytest.fixture
async def api(aiohttp_client, settings, site):
    """The app, allowed to reach exactly the site's own address and port."""
    from server.app import create_app

    port = int(site[0].rsplit(":", 1)[1])
    allowed = settings.replace(fetch_allow_hosts=f"127.0.0.1:{port}", sample_rate=1.0)
    return await aiohttp_client(create_app(allowed))


async def _check(api, url: str) -> dict:
    """POST a full (no early stop) URL check and wait for its end."""
    resp = await api.post("/v1/checks", json={"url": url, "full": True})
    assert resp.status == 202, await resp.text()
    check_id = (await resp.json())["id"]
    for _ in range(600):
        body = await (await api.get(f"/v1/checks/{check_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("check did not finish")


async def test_social_page_gives_a_verdict_cached_under_page_and_media_url(api, site, canary) -> None:
    base, _ = site
    body = await _check(api, f"{base}/post/social")
    assert body["status"] == "done", body
    verdict = body["verdict"]
    assert verdict["frames_analyzed"] == 3  # 3 s at 1 frame/s
    urls = {k["value"] for k in verdict["keys"] if k["kind"] == "url"}
    assert {f"{base}/post/social", f"{base}/media/face.mp4"} <= urls
    for url in (f"{base}/post/social?utm_source=x", f"{base}/media/face.mp4"):
        again = await api.post("/v1/checks", json={"url": url})
        assert again.status == 200 and (await again.json())["id"] == body["id"]
    assert canary.connections == 0


async def test_hls_master_gives_a_verdict_from_the_capped_rendition(api, site) -> None:
    base, media = site
    body = await _check(api, f"{base}/hls/master.m3u8")
    assert body["status"] == "done", body
    verdict = body["verdict"]
    assert verdict["frames_analyzed"] == 3
    assert [round(f["t"], 2) for f in verdict["timeline"]] == [0.0, 1.0, 2.0]
    assert (verdict["media"]["width"], verdict["media"]["container"]) == (320, "mpegts")
    assert verdict["media"]["bytes_fetched"] == media.bytes_served
    assert not any(r.startswith("/hls/lo/") for r in media.requests)


async def test_page_with_an_hls_video(api, site) -> None:
    base, _ = site
    body = await _check(api, f"{base}/post/stream")
    assert body["status"] == "done" and body["verdict"]["frames_analyzed"] == 3


async def test_progressive_mp4(api, site) -> None:
    base, _ = site
    body = await _check(api, f"{base}/media/face.mp4")
    assert body["status"] == "done" and body["verdict"]["frames_analyzed"] == 3


async def test_page_without_video_is_unsupported_site(api, site) -> None:
    base, _ = site
    resp = await api.post("/v1/checks", json={"url": f"{base}/post/empty"})
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "unsupported_site" and error["site"] == "127.0.0.1"


async def test_playlist_with_a_local_file_segment_is_refused(api, site) -> None:
    base, _ = site
    resp = await api.post("/v1/checks", json={"url": f"{base}/bad/passwd.m3u8"})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "url_refused" and error["rule"] == "scheme"


async def test_segment_redirecting_to_another_loopback_port_fails_the_check(api, site, canary) -> None:
    base, _ = site
    body = await _check(api, f"{base}/bad/redirect.m3u8")
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "url_refused" and "redirect" in body["error"]["message"]
    assert canary.connections == 0


async def test_page_pointing_at_another_loopback_port(api, site, canary) -> None:
    base, _ = site
    resp = await api.post("/v1/checks", json={"url": f"{base}/post/evil"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "url_refused"
    assert canary.connections == 0


async def test_ten_minute_stream_reads_a_small_fraction(aiohttp_client, settings, site) -> None:
    from server.app import create_app

    base, media = site
    port = int(base.rsplit(":", 1)[1])
    app = create_app(settings.replace(fetch_allow_hosts=f"127.0.0.1:{port}", sample_rate=0.1))
    api = await aiohttp_client(app)
    body = await _check(api, f"{base}/long/index.m3u8")
    assert body["status"] == "done", body
    m = body["verdict"]["media"]
    total = media.long_total_bytes()
    assert m["bytes_fetched"] == media.bytes_served < 0.2 * total
    assert m["bytes_total_estimate"] == pytest.approx(total, rel=0.1)
    assert m["stream"]["sampled"] is True and m["stream"]["segments_total"] == 60
    times = [f["t"] for f in body["verdict"]["timeline"]]
    assert times and max(times) >= 590  # the last window is read, at its true position
