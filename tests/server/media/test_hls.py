"""HLS playlist parsing, rendition choice, DASH manifests and the sampling plan for long streams."""

from __future__ import annotations

import pytest

from server.errors import UnsupportedMedia
from server.media.dash import parse_mpd
from server.media.hls import BadPlaylist, MasterPlaylist, MediaPlaylist, Variant, parse_playlist, pick_variant
from server.media.ingest import StreamBudget, plan_segments
from tests.helpers.streams import master_playlist, media_playlist

BASE = "https://cdn.example.com/live/show/index.m3u8"


def test_master_playlist_variants_with_relative_and_absolute_uris() -> None:
    text = (
        master_playlist([("low/index.m3u8", 426, 240, 400_000), ("/abs/720.m3u8", 1280, 720, 2_500_000)])
        + '#EXT-X-STREAM-INF:BANDWIDTH=6000000,RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2"\nhttps://other.example.net/1080.m3u8\n'
    )
    parsed = parse_playlist(text, BASE)
    assert isinstance(parsed, MasterPlaylist)
    assert [v.url for v in parsed.variants] == [
        "https://cdn.example.com/live/show/low/index.m3u8",
        "https://cdn.example.com/abs/720.m3u8",
        "https://other.example.net/1080.m3u8",
    ]
    assert [(v.width, v.height, v.bandwidth) for v in parsed.variants][2] == (1920, 1080, 6_000_000)
    assert parsed.variants[2].codecs == "avc1.640028,mp4a.40.2"  # quoted attribute with a comma


@pytest.mark.parametrize(
    ("cap", "height"),
    [
        pytest.param(720, 720, id="cap-720"),
        pytest.param(1080, 1080, id="cap-1080"),
        pytest.param(480, 360, id="cap-480"),
        pytest.param(100, 240, id="none-fits-smallest"),
    ],
)
def test_pick_variant_by_resolution_cap(cap: int, height: int) -> None:
    variants = [
        Variant("a", 300_000, 426, 240),
        Variant("b", 2_500_000, 1280, 720),
        Variant("c", 800_000, 640, 360),
        Variant("d", 6_000_000, 1920, 1080),
        Variant("audio", 128_000, codecs="mp4a.40.2"),
    ]
    assert pick_variant(variants, cap).height == height


def test_pick_variant_without_resolution_uses_bandwidth_and_skips_audio() -> None:
    audio = Variant("audio", 96_000, codecs="mp4a.40.2")
    variants = [audio, Variant("lo", 500_000), Variant("hi", 9_000_000)]
    assert pick_variant(variants).url == "lo"
    assert pick_variant([Variant("x", 800_000), Variant("y", 2_000_000)]).url == "y"


def test_media_playlist_timeline_and_relative_segments() -> None:
    text = media_playlist([("seg0.ts", 4.0), ("../other/seg1.ts", 4.0), ("seg2.ts", 2.5)], sequence=7)
    parsed = parse_playlist(text, BASE)
    assert isinstance(parsed, MediaPlaylist)
    assert parsed.ended and parsed.target_duration == 4
    assert [s.url for s in parsed.segments] == [
        "https://cdn.example.com/live/show/seg0.ts",
        "https://cdn.example.com/live/other/seg1.ts",
        "https://cdn.example.com/live/show/seg2.ts",
    ]
    assert [s.start for s in parsed.segments] == [0.0, 4.0, 8.0]
    assert [s.sequence for s in parsed.segments] == [7, 8, 9]
    assert parsed.duration == pytest.approx(10.5)


def test_hostile_uris_are_kept_for_the_fetcher_to_refuse() -> None:
    text = media_playlist([("file:///etc/passwd", 2.0), ("http://127.0.0.1:6379/x.ts", 2.0)])
    parsed = parse_playlist(text, BASE)
    assert isinstance(parsed, MediaPlaylist)
    assert [s.url for s in parsed.segments] == ["file:///etc/passwd", "http://127.0.0.1:6379/x.ts"]


def test_byteranges_map_and_discontinuity() -> None:
    text = "\n".join(
        [
            "#EXTM3U",
            "#EXT-X-TARGETDURATION:2",
            '#EXT-X-MAP:URI="main.mp4",BYTERANGE="800@0"',
            "#EXTINF:2,",
            "#EXT-X-BYTERANGE:1000@800",
            "main.mp4",
            "#EXT-X-DISCONTINUITY",
            "#EXTINF:2,",
            "#EXT-X-BYTERANGE:500",
            "main.mp4",
        ]
    )
    parsed = parse_playlist(text, BASE)
    assert isinstance(parsed, MediaPlaylist)
    assert parsed.init is not None and parsed.init.byterange == (0, 799)
    assert [s.byterange for s in parsed.segments] == [(800, 1799), (1800, 2299)]
    assert [s.discontinuity for s in parsed.segments] == [False, True]
    assert not parsed.ended  # no ENDLIST: a live window


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("<html></html>", BadPlaylist, id="not-m3u8"),
        pytest.param("#EXTM3U\n#EXT-X-TARGETDURATION:2\n", BadPlaylist, id="no-segments"),
        pytest.param("#EXTM3U\nseg.ts\n", BadPlaylist, id="no-extinf"),
        pytest.param("#EXTM3U\n#EXTINF:nan,\nseg.ts\n", BadPlaylist, id="nan-duration"),
        pytest.param("#EXTM3U\n#EXTINF:1e9,\nseg.ts\n", BadPlaylist, id="huge-duration"),
        pytest.param(
            '#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="k"\n#EXTINF:2,\nseg.ts\n',
            UnsupportedMedia,
            id="encrypted",
        ),
        pytest.param("#EXTM3U\n#EXT-X-I-FRAMES-ONLY\n#EXTINF:2,\nseg.ts\n", BadPlaylist, id="iframes"),
        pytest.param("#EXTM3U\n" + "#EXTINF:1,\ns.ts\n" * 10_001, BadPlaylist, id="too-many-segments"),
    ],
)
def test_bad_playlists(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_playlist(text, BASE)


def _long_playlist(seconds: float, seg: float) -> MediaPlaylist:
    n = int(seconds / seg)
    parsed = parse_playlist(media_playlist([(f"s{i}.ts", seg) for i in range(n)]), BASE)
    assert isinstance(parsed, MediaPlaylist)
    return parsed


def test_short_vod_is_fetched_whole() -> None:
    playlist = _long_playlist(40, 2.0)
    plan, spans = plan_segments(playlist, StreamBudget())
    assert len(plan) == 20 and spans == [(0.0, 40.0)]


def test_long_vod_is_sampled_in_windows_across_the_duration() -> None:
    playlist = _long_playlist(600, 2.0)
    budget = StreamBudget(windows=8, window_s=6.0)
    plan, spans = plan_segments(playlist, budget)
    assert len(spans) == 8
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(600.0)
    assert all(b - a == pytest.approx(6.0) for a, b in spans)
    assert len(plan) == 24  # 8 windows × 3 segments of 2 s
    gaps = [spans[i + 1][0] - spans[i][1] for i in range(7)]
    assert max(gaps) - min(gaps) <= 2.0  # evenly spread
    # Byte budget: a small fraction of the segments.
    assert len(plan) / len(playlist.segments) < 0.1


def test_long_segments_give_one_segment_per_window() -> None:
    plan, spans = plan_segments(_long_playlist(600, 10.0), StreamBudget())
    assert len(plan) == 8 and len(spans) == 8


def test_live_playlist_reads_the_newest_segments_and_duration_cap() -> None:
    text = media_playlist([(f"s{i}.ts", 6.0) for i in range(30)], ended=False)
    playlist = parse_playlist(text, BASE)
    assert isinstance(playlist, MediaPlaylist)
    plan, _ = plan_segments(playlist, StreamBudget(full_fetch_s=30))
    assert [s.sequence for s in plan] == [25, 26, 27, 28, 29]
    capped, _ = plan_segments(_long_playlist(100, 10.0), StreamBudget(max_duration_s=35, full_fetch_s=60))
    assert [s.start for s in capped] == [0.0, 10.0, 20.0, 30.0]


MPD_TEMPLATE = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT0H0M9.5S">
  <BaseURL>media/</BaseURL>
  <Period>
    <AdaptationSet contentType="audio" mimeType="audio/mp4">
      <Representation id="a" bandwidth="64000">
        <SegmentTemplate media="a-$Number$.m4s" duration="2"/>
      </Representation>
    </AdaptationSet>
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <SegmentTemplate initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/$Number%03d$.m4s"
                       startNumber="1" timescale="1000" duration="4000"/>
      <Representation id="v240" bandwidth="300000" width="426" height="240"/>
      <Representation id="v720" bandwidth="2500000" width="1280" height="720"/>
      <Representation id="v1080" bandwidth="5000000" width="1920" height="1080"/>
    </AdaptationSet>
  </Period>
</MPD>"""


def test_dash_segment_template_with_number() -> None:
    playlist = parse_mpd(MPD_TEMPLATE, "https://cdn.example.com/v/manifest.mpd")
    assert (playlist.width, playlist.height) == (1280, 720)
    assert playlist.init is not None and playlist.init.url == "https://cdn.example.com/v/media/v720/init.mp4"
    assert [s.url.rsplit("/", 2)[-2:] for s in playlist.segments] == [
        ["v720", "001.m4s"],
        ["v720", "002.m4s"],
        ["v720", "003.m4s"],
    ]
    assert [s.duration for s in playlist.segments] == [4.0, 4.0, 1.5]
    assert parse_mpd(MPD_TEMPLATE, "https://cdn.example.com/v/m.mpd", max_height=300).height == 240


def test_dash_segment_timeline_and_segment_list() -> None:
    timeline = """<MPD type="static" mediaPresentationDuration="PT6S">
      <Period><AdaptationSet mimeType="video/mp4">
      <Representation id="v" bandwidth="1" width="320" height="240">
        <SegmentTemplate timescale="90000" initialization="init-$RepresentationID$.mp4" media="t-$Time$.m4s">
          <SegmentTimeline><S t="0" d="180000" r="1"/><S d="90000" r="-1"/></SegmentTimeline>
        </SegmentTemplate></Representation></AdaptationSet></Period></MPD>"""
    playlist = parse_mpd(timeline, "https://x.example/a.mpd")
    assert [s.url.rsplit("/", 1)[1] for s in playlist.segments] == [
        "t-0.m4s",
        "t-180000.m4s",
        "t-360000.m4s",
        "t-450000.m4s",
    ]
    assert [s.start for s in playlist.segments] == [0.0, 2.0, 4.0, 5.0]
    seg_list = """<MPD type="static" mediaPresentationDuration="PT4S">
      <Period><AdaptationSet mimeType="video/mp4">
      <Representation id="v" bandwidth="1" height="240"><SegmentList timescale="1" duration="2">
        <Initialization sourceURL="init.mp4"/>
        <SegmentURL media="one.m4s"/><SegmentURL media="two.m4s" mediaRange="0-99"/>
      </SegmentList></Representation></AdaptationSet></Period></MPD>"""
    playlist = parse_mpd(seg_list, "https://x.example/b/list.mpd")
    assert [s.url for s in playlist.segments] == [
        "https://x.example/b/one.m4s",
        "https://x.example/b/two.m4s",
    ]
    assert playlist.segments[1].byterange == (0, 99) and playlist.init is not None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param('<MPD type="dynamic"><Period/></MPD>', UnsupportedMedia, id="live"),
        pytest.param(
            '<MPD><Period><AdaptationSet mimeType="video/mp4"><ContentProtection/>'
            '<Representation id="v"/></AdaptationSet></Period></MPD>',
            UnsupportedMedia,
            id="drm",
        ),
        pytest.param('<!DOCTYPE MPD [<!ENTITY a "aaaa">]><MPD>&a;</MPD>', BadPlaylist, id="entities"),
        pytest.param("<MPD><Period></MPD>", BadPlaylist, id="malformed"),
        pytest.param("<MPD><Period/></MPD>", BadPlaylist, id="no-video"),
    ],
)
def test_bad_mpds(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_mpd(text, "https://x.example/a.mpd")
