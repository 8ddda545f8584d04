"""Page URL → media URL with yt-dlp, every request through our Fetcher (local fake site, no internet)."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import UnmaskError
from server.media.netguard import FetchFailed, FetchRefused
from server.media.resolve import FetcherRH, ResolvedMedia, UnsupportedSite, resolve_page
from tests.helpers.streams import Canary, StreamSite, make_site
from tests.helpers.videos import face_frames, write_face_video


@pytest.fixture(scope="module")
def site_media(tmp_path_factory: pytest.TempPathFactory) -> StreamSite:
    """The fake site's media, encoded once for this module."""
    path = write_face_video(tmp_path_factory.mktemp("site") / "face.mp4", seconds=1.0)
    return make_site(path.read_bytes(), list(face_frames(1.0, size=(320, 240), face=160)))


async def test_social_page_resolves_to_its_og_video(site) -> None:
    base, _, fetcher = site
    resolved = await resolve_page(f"{base}/post/social", fetcher)
    assert resolved == ResolvedMedia(
        kind="progressive",
        url=f"{base}/media/face.mp4",
        page_url=f"{base}/post/social",
        video_id=None,  # the generic extractor's id is a file name, not a platform id
        title="Look at this",
        duration=None,
        extractor="Generic",
        headers=resolved.headers,
    )
    assert "User-Agent" in resolved.headers and "Cookie" not in resolved.headers


async def test_page_with_hls_video_resolves_to_a_rendition_under_the_cap(site) -> None:
    base, _, fetcher = site
    resolved = await resolve_page(f"{base}/post/stream", fetcher)
    assert resolved.kind == "hls"
    assert resolved.url == f"{base}/hls/hi/index.m3u8"  # 240p is the highest under 720
    low = await resolve_page(f"{base}/post/stream", fetcher, max_height=200)
    assert low.url == f"{base}/hls/lo/index.m3u8"


async def test_page_without_video_is_unsupported_site(site) -> None:
    base, _, fetcher = site
    with pytest.raises(UnsupportedSite) as info:
        await resolve_page(f"{base}/post/empty", fetcher)
    err = info.value
    assert (err.status, err.code, err.details["site"]) == (422, "unsupported_site", "127.0.0.1")
    assert "127.0.0.1" in err.message


async def test_missing_page_is_a_fetch_error_not_unsupported(site) -> None:
    base, _, fetcher = site
    with pytest.raises(FetchFailed) as info:
        await resolve_page(f"{base}/post/gone", fetcher)
    assert info.value.details["upstream_status"] == 404


async def test_page_pointing_at_another_loopback_port_reaches_nothing(site, canary: Canary) -> None:
    """yt-dlp fetches the page's m3u8 itself: through our handler, so the other port is refused."""
    base, _, fetcher = site
    with pytest.raises(FetchRefused) as info:
        await resolve_page(f"{base}/post/evil", fetcher)
    assert "port" in info.value.message
    assert canary.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://10.0.0.1/post/1", id="private"),
        pytest.param("http://169.254.169.254/latest/", id="metadata"),
        pytest.param("http://[::1]/x", id="ipv6-loopback"),
    ],
)
async def test_refused_pages_are_never_requested(site, url: str) -> None:
    _, _, fetcher = site
    with pytest.raises(FetchRefused):
        await resolve_page(url, fetcher)


async def test_yt_dlp_uses_only_our_handler(site) -> None:
    """No urllib/requests/curl handler is ever built: file:// and other schemes have no path out."""
    from server.media.resolve import _Gate, _options, _YoutubeDL

    _, _, fetcher = site
    gate = _Gate(fetcher, asyncio.get_running_loop())
    with _YoutubeDL(_options(720), gate) as ydl:
        handlers = list(ydl._request_director.handlers.values())
    assert [type(h) for h in handlers] == [FetcherRH]
    assert FetcherRH._SUPPORTED_URL_SCHEMES == ("http", "https")


async def test_errors_are_unmask_errors(site) -> None:
    base, _, fetcher = site
    for path in ("/post/empty", "/post/evil", "/nothing"):
        with pytest.raises(UnmaskError):
            await resolve_page(base + path, fetcher)


async def test_a_yt_dlp_that_ignores_our_handler_fails_closed(site, monkeypatch) -> None:
    """If a release stopped calling build_request_director, resolution must refuse, not go direct."""
    import yt_dlp

    from server.media import resolve

    base, _, fetcher = site
    monkeypatch.setattr(resolve._YoutubeDL, "build_request_director", yt_dlp.YoutubeDL.build_request_director)
    with pytest.raises(UnmaskError) as info:
        await resolve_page(f"{base}/post/social", fetcher)
    assert info.value.status == 500 and "own HTTP stack" in info.value.message
