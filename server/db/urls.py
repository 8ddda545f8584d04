"""Canonical URLs and platform video ids: the URL side of the verdict cache keys."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from server.errors import InvalidField

# Query parameters that identify a visitor, a campaign or a share action, never the video.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "igshid",
        "igsh",
        "si",
        "feature",
        "pp",
        "ref",
        "ref_src",
        "ref_url",
        "s",
        "t_s",
        "share_id",
        "mibextid",
        "_ga",
        "_gl",
        "mc_cid",
        "mc_eid",
        "spm",
        "vero_id",
        "oly_anon_id",
        "oly_enc_id",
        "rb_clickid",
        "utm_id",
        "is_from_webapp",
        "sender_device",
        "web_id",
        "_r",
        "_t",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_")

DEFAULT_PORTS = {"http": 80, "https": 443}

# Platform → patterns whose first group is the video id. Matched against host + path (+ query).
_PLATFORMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "youtube",
        re.compile(
            r"^(?:www\.|m\.|music\.)?youtube\.com/(?:watch\?(?:.*&)?v=|shorts/|embed/|live/|v/)([\w-]{11})"
        ),
    ),
    ("youtube", re.compile(r"^youtu\.be/([\w-]{11})")),
    ("tiktok", re.compile(r"^(?:www\.|m\.)?tiktok\.com/@[^/]+/video/(\d+)")),
    ("tiktok", re.compile(r"^(?:www\.)?tiktok\.com/(?:embed/v2/|v/)(\d+)")),
    ("x", re.compile(r"^(?:www\.|mobile\.)?(?:twitter|x)\.com/[^/]+/status(?:es)?/(\d+)")),
    ("instagram", re.compile(r"^(?:www\.)?instagram\.com/(?:[^/]+/)?(?:p|reel|reels|tv)/([\w-]+)")),
    (
        "facebook",
        re.compile(
            r"^(?:www\.|m\.|web\.)?facebook\.com/(?:[^/]+/videos/(?:[^/]+/)?|reel/|watch/?\?(?:.*&)?v=)(\d+)"
        ),
    ),
    ("facebook", re.compile(r"^fb\.watch/([\w-]+)")),
    ("reddit", re.compile(r"^(?:www\.|old\.|new\.)?reddit\.com/r/[^/]+/comments/([a-z0-9]+)")),
    ("reddit", re.compile(r"^v\.redd\.it/([a-z0-9]+)")),
    ("vimeo", re.compile(r"^(?:www\.|player\.)?vimeo\.com/(?:video/)?(\d+)")),
    ("dailymotion", re.compile(r"^(?:www\.)?dailymotion\.com/video/([a-z0-9]+)")),
    ("twitch", re.compile(r"^(?:www\.)?twitch\.tv/videos/(\d+)")),
)


def canonical_url(url: str) -> str:
    """The URL as a cache key: lower-case scheme/host, no default port, no fragment, no tracking."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidField(f"url: not a valid URL ({exc})", field="url") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidField("url: only absolute http(s) URLs can be checked", field="url")
    host = parts.hostname.rstrip(".").lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(TRACKING_PREFIXES)
    ]
    query.sort()
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, urlencode(query, doseq=True), ""))


def platform_video_id(url: str) -> str | None:
    """``platform:id`` for a post/video URL of a big site, so every link form of a video meets."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if not parts.hostname:
        return None
    target = parts.hostname.lower() + parts.path + ("?" + parts.query if parts.query else "")
    for platform, pattern in _PLATFORMS:
        match = pattern.match(target)
        if match:
            return f"{platform}:{match.group(1)}"
    return None
