"""Canonical URLs and platform video ids."""

from __future__ import annotations

import pytest

from server.db.urls import canonical_url, platform_video_id
from server.errors import InvalidField


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "HTTPS://Example.COM:443/v.mp4#t=3", "https://example.com/v.mp4", id="case-port-fragment"
        ),
        pytest.param("http://example.com:80/a?b=1", "http://example.com/a?b=1", id="http-default-port"),
        pytest.param("http://example.com:8080/a", "http://example.com:8080/a", id="other-port-kept"),
        pytest.param(
            "https://example.com/v.mp4?utm_source=x&id=7&fbclid=abc&si=q&UTM_Campaign=y",
            "https://example.com/v.mp4?id=7",
            id="tracking-stripped",
        ),
        pytest.param("https://example.com/v?b=2&a=1", "https://example.com/v?a=1&b=2", id="query-sorted"),
        pytest.param("https://example.com", "https://example.com/", id="empty-path"),
        pytest.param("https://[::1]:8443/x", "https://[::1]:8443/x", id="ipv6"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://example.com/a", "/relative/path", "https:///nohost", "http://[::1"])
def test_canonical_url_rejects_non_http(url: str) -> None:
    with pytest.raises(InvalidField):
        canonical_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s", "youtube:dQw4w9WgXcQ"),
        ("https://youtu.be/dQw4w9WgXcQ?si=abc", "youtube:dQw4w9WgXcQ"),
        ("https://youtube.com/shorts/dQw4w9WgXcQ", "youtube:dQw4w9WgXcQ"),
        ("https://m.youtube.com/watch?feature=share&v=dQw4w9WgXcQ", "youtube:dQw4w9WgXcQ"),
        ("https://www.tiktok.com/@someone/video/7301234567890123456?lang=en", "tiktok:7301234567890123456"),
        ("https://x.com/user/status/1790000000000000000", "x:1790000000000000000"),
        ("https://twitter.com/user/status/1790000000000000000?s=20", "x:1790000000000000000"),
        ("https://www.instagram.com/reel/C7abcDEF123/", "instagram:C7abcDEF123"),
        ("https://www.facebook.com/someone/videos/123456789012345/", "facebook:123456789012345"),
        ("https://www.reddit.com/r/videos/comments/1abcde/some_title/", "reddit:1abcde"),
        ("https://vimeo.com/76979871", "vimeo:76979871"),
        ("https://example.com/video.mp4", None),
    ],
)
def test_platform_video_id(url: str, expected: str | None) -> None:
    assert platform_video_id(url) == expected
