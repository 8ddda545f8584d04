"""Opening URLs into a spool: progressive files, HLS renditions, sampled long streams, hostile playlists."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from server.errors import UnmaskError
from server.media.decode import open_video
from server.media.fetch import Fetcher, FetchPolicy
from server.media.ingest import Ingest, StreamBudget, open_url
from server.media.netguard import FetchRefused
from server.media.resolve import UnsupportedSite
from server.media.source import GrowingFile
from tests.helpers.streams import StreamSite, make_site, write_dash
from tests.helpers.videos import face_frames, write_face_video


@pytest.fixture(scope="module")
def site_media(tmp_path_factory: pytest.TempPathFactory) -> StreamSite:
    """The fake site's media, encoded once for this module."""
    path = write_face_video(tmp_path_factory.mktemp("site") / "face.mp4", seconds=1.0)
    return make_site(path.read_bytes(), list(face_frames(3.0, size=(320, 240), face=160)))


@pytest.fixture
def spools(tmp_path: Path):
    """A spool factory that remembers every spool it made (all closed at the end)."""
    made: list[GrowingFile] = []

    def new(size: int | None) -> GrowingFile:
        made.append(GrowingFile(dir=tmp_path, expected_size=size))
        return made[-1]

    yield new
    for spool in made:
        spool.close()


def _decode(ingest: Ingest, rate: float = 2.0) -> list[float]:
    """Decode the spool: the sampled times."""
    with open_video(ingest.spool.reader(), container=ingest.container) as reader:
        return [round(f.t, 2) for f in reader.samples(rate)]


async def _read_all(ingest: Ingest) -> list[float]:
    """Pump the ingest to the end and decode the spool at 2 frames/s: the sampled times."""
    await ingest.pump()
    with open_video(ingest.spool.reader(), container=ingest.container) as reader:
        return [round(f.t, 2) for f in reader.samples(2.0)]


async def test_hls_master_picks_the_rendition_and_decodes_every_segment(site, spools) -> None:
    base, media, fetcher = site
    ingest = await open_url(f"{base}/hls/master.m3u8", fetcher, spools)
    assert ingest.container == "mpegts"
    assert ingest.stats.rendition == {"width": 320, "height": 240, "bandwidth": 800_000}
    times = await _read_all(ingest)
    assert times == [0.0, 0.52, 1.0, 1.52, 2.0, 2.52]
    assert "/hls/lo/seg0.ts" not in media.requests
    stats = ingest.media()
    assert stats["bytes_fetched"] == stats["bytes_total_estimate"] == media.bytes_served
    assert stats["stream"]["sampled"] is False and stats["stream"]["segments_fetched"] == 3


async def test_cap_picks_the_lower_rendition(site, spools) -> None:
    base, _, fetcher = site
    ingest = await open_url(f"{base}/hls/master.m3u8", fetcher, spools, budget=StreamBudget(max_height=200))
    await ingest.pump()
    with open_video(ingest.spool.reader(), container="mpegts") as reader:
        assert (reader.info.width, reader.info.height) == (160, 120)


async def test_progressive_file_and_social_page(site, spools) -> None:
    base, media, fetcher = site
    direct = await open_url(f"{base}/media/face.mp4", fetcher, spools)
    assert direct.container == "mp4" and direct.cache_keys() == []
    await direct.pump()
    assert direct.spool.finished and direct.media()["bytes_fetched"] == len(media.face_mp4)
    page = await open_url(f"{base}/post/social", fetcher, spools)
    assert page.container == "mp4"
    assert page.cache_keys() == [("url", f"{base}/post/social"), ("url", f"{base}/media/face.mp4")]
    assert page.media()["stream"]["title"] == "Look at this"
    assert len(await _read_all(page)) == 2


async def test_page_with_a_stream_resolves_and_reads_hls(site, spools) -> None:
    base, _, fetcher = site
    ingest = await open_url(f"{base}/post/stream", fetcher, spools)
    assert ingest.container == "mpegts" and ingest.stats.kind == "hls"
    assert len(await _read_all(ingest)) == 6


async def test_empty_page_is_unsupported_site(site, spools) -> None:
    base, _, fetcher = site
    with pytest.raises(UnsupportedSite):
        await open_url(f"{base}/post/empty", fetcher, spools)


async def test_segment_pointing_at_a_local_file_is_refused(site, spools) -> None:
    base, _, fetcher = site
    with pytest.raises(FetchRefused) as info:
        await open_url(f"{base}/bad/passwd.m3u8", fetcher, spools)
    assert info.value.details["rule"] == "scheme"


async def test_segment_redirecting_to_another_loopback_port_fails_the_stream(site, spools, canary) -> None:
    base, _, fetcher = site
    ingest = await open_url(f"{base}/bad/redirect.m3u8", fetcher, spools)  # segment 0 is fine
    await ingest.pump()
    with pytest.raises(UnmaskError) as info:  # while probing or while decoding: the spool has failed
        _decode(ingest)
    assert isinstance(info.value, FetchRefused) and "redirect" in info.value.message
    assert canary.connections == 0


async def test_ten_minute_stream_is_sampled_with_true_timestamps(site, spools) -> None:
    base, media, fetcher = site
    ingest = await open_url(f"{base}/long/index.m3u8", fetcher, spools)
    await ingest.pump()
    stats = ingest.media()
    total = media.long_total_bytes()
    assert stats["stream"]["sampled"] is True
    assert stats["stream"]["segments_fetched"] == 8 and stats["stream"]["segments_total"] == 60
    assert stats["bytes_fetched"] == media.bytes_served
    assert stats["bytes_fetched"] < 0.2 * total
    assert stats["bytes_total_estimate"] == pytest.approx(total, rel=0.1)
    windows = stats["stream"]["windows"]
    with open_video(ingest.spool.reader(), container="mpegts") as reader:
        times = [f.t for f in reader.samples(0.5)]
    assert times and all(any(a - 0.01 <= t < b for a, b in windows) for t in times)
    assert {int(t // 10) for t in times} == {int(a // 10) for a, _ in windows}  # every window decoded
    assert max(times) > 590


async def test_stop_flag_ends_the_download_cleanly(site, spools) -> None:
    base, _, fetcher = site
    ingest = await open_url(f"{base}/long/index.m3u8", fetcher, spools)
    await ingest.pump(stop=lambda: True)
    assert ingest.spool.finished
    assert ingest.media()["stream"]["segments_fetched"] <= 2


async def test_dash_manifest_whole_and_sampled(tmp_path: Path, spools) -> None:
    from aiohttp import web

    write_dash(face_frames(3.0, size=(320, 240), face=160), tmp_path / "dash", fps=25)
    app = web.Application()
    app.router.add_static("/d", tmp_path / "dash")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}/d/manifest.mpd"
    policy = FetchPolicy(allow_hosts=frozenset({("127.0.0.1", server.port)}))
    try:
        async with Fetcher(policy) as fetcher:
            whole = await open_url(url, fetcher, spools)
            assert whole.container == "mp4" and whole.stats.kind == "dash"
            assert await _read_all(whole) == [0.0, 0.52, 1.0, 1.52, 2.0, 2.52]
            budget = StreamBudget(full_fetch_s=1, windows=2, window_s=0.5)
            sampled = await open_url(url, fetcher, spools, budget=budget)
            assert await _read_all(sampled) == [0.0, 0.52, 2.0, 2.52]  # fMP4 keeps true times too
            assert sampled.media()["stream"]["windows"] == [[0.0, 1.0], [2.0, 3.0]]
    finally:
        await server.close()
