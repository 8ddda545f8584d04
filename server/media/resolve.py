"""Page URL → media URL: yt-dlp as a metadata extractor whose every request goes through our Fetcher.

yt-dlp knows how to find the video behind a social-media post (and, through its generic
extractor, behind any page with og:video, <video>, JSON-LD or embedded players). It has its own
HTTP stack, so we never let it use it: the YoutubeDL subclass below builds a request director
with one handler, ``FetcherRH``, that sends each request through our SSRF-safe ``Fetcher`` on the
event loop (vetted and pinned addresses, redirects re-vetted, timeouts, a byte cap). yt-dlp only
extracts metadata (``download=False``); it never downloads media, spawns no program (the format
is always given, so it never probes for ffmpeg), loads no plugins and writes no cache.

Limits of this design: only GET (and HEAD, sent as GET) requests are made, so extractors that
POST to a site API fail; cookies a site sets are not sent back.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yt_dlp
import yt_dlp.globals
from multidict import CIMultiDict
from yt_dlp.networking.common import Request, RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError

from server import limits
from server.db.urls import platform_video_id
from server.errors import PayloadTooLarge, UnmaskError
from server.media.fetch import Fetcher
from server.media.netguard import FetchFailed, FetchRefused

__all__ = ["ResolvedMedia", "UnsupportedSite", "resolve_page", "safe_headers"]

_LOGGER = logging.getLogger(__name__)

# Plugins are Python files found in the user's directories; loading them would run foreign code
# inside the server. The setting is process-wide in yt-dlp; nothing else here uses yt-dlp.
yt_dlp.globals.plugin_dirs.value = []

# Request headers yt-dlp (or a resolved format) may set; the rest (cookies, auth, Range, Host…)
# either belongs to the Fetcher or could forward something that is not ours to send.
_PASSED_HEADERS = frozenset(
    {"user-agent", "accept", "accept-language", "referer", "origin", "x-requested-with"}
)

_KINDS = {
    "http": "progressive",
    "https": "progressive",
    "m3u8": "hls",
    "m3u8_native": "hls",
    "http_dash_segments": "dash",
    "http_dash_segments_generator": "dash",
}

# Extractors that read any page: their "id" comes from the page's file name or an element
# counter ("video-1"), so it would collide across sites and is no platform video id.
_PAGE_EXTRACTORS = frozenset({"generic", "html5mediaembed"})


class UnsupportedSite(UnmaskError):
    """Nothing checkable could be extracted from the page (422: the URL is fine, its content is not)."""

    status, code = 422, "unsupported_site"


@dataclass(frozen=True)
class ResolvedMedia:
    """Where the video of a page is, and how to read it."""

    kind: str  # "progressive" | "hls" | "dash"
    url: str
    page_url: str | None = None
    video_id: str | None = None
    title: str | None = None
    duration: float | None = None
    extractor: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def safe_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Only the request headers a page may ask us to send (User-Agent, Referer, …)."""
    return {k: v for k, v in (headers or {}).items() if k.lower() in _PASSED_HEADERS and isinstance(v, str)}


class _Gate:
    """What the handler thread shares with the event loop: fetcher, budget, refusals, cancel flag."""

    def __init__(self, fetcher: Fetcher, loop: asyncio.AbstractEventLoop) -> None:
        self.fetcher = fetcher
        self.loop = loop
        self.requests = 0
        self.cancelled = threading.Event()
        self.refusals: list[FetchRefused] = []
        self.failures: list[UnmaskError] = []

    async def get(
        self, url: str, headers: dict[str, str], head: bool
    ) -> tuple[str, int, CIMultiDict[str], bytes]:
        """GET through the Fetcher; the body (empty for HEAD) is read whole, up to the cap."""
        async with await self.fetcher.open(url, headers=headers) as resp:
            body = bytearray()
            if not head:
                async for chunk in resp.iter_chunks():
                    body += chunk
                    if len(body) > limits.RESOLVE_MAX_RESPONSE_BYTES:
                        raise PayloadTooLarge(
                            f"a page response is larger than {limits.RESOLVE_MAX_RESPONSE_BYTES} bytes",
                            limit=limits.RESOLVE_MAX_RESPONSE_BYTES,
                        )
            return resp.url, resp.status, CIMultiDict(resp.headers), bytes(body)


class FetcherRH(RequestHandler):
    """yt-dlp request handler that sends every request through our Fetcher (on the event loop)."""

    _SUPPORTED_URL_SCHEMES = ("http", "https")
    _SUPPORTED_PROXY_SCHEMES = ()
    _SUPPORTED_FEATURES = ()

    def __init__(self, *, gate: _Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gate = gate

    def _check_extensions(self, extensions: dict[str, Any]) -> None:
        super()._check_extensions(extensions)
        # Per-request timeouts and cookie jars are the Fetcher's business; accept and ignore them.
        for name in ("timeout", "cookiejar", "legacy_ssl", "keep_header_casing"):
            extensions.pop(name, None)

    def _send(self, request: Request) -> Response:
        gate = self._gate
        if gate.cancelled.is_set():
            raise TransportError("resolution was cancelled")
        if request.method not in ("GET", "HEAD"):
            raise TransportError(f"{request.method} requests are not made while resolving a page")
        gate.requests += 1
        if gate.requests > limits.RESOLVE_MAX_REQUESTS:
            raise TransportError(f"resolving needed more than {limits.RESOLVE_MAX_REQUESTS} requests")
        headers = safe_headers(self._get_headers(request))
        future = asyncio.run_coroutine_threadsafe(
            gate.get(request.url, headers, request.method == "HEAD"), gate.loop
        )
        try:
            url, status, resp_headers, body = future.result(timeout=limits.RESOLVE_TIMEOUT_S)
        except FetchRefused as exc:
            gate.refusals.append(exc)
            raise TransportError(f"refused: {exc.message}", cause=exc) from exc
        except FetchFailed as exc:
            gate.failures.append(exc)
            status = exc.details.get("upstream_status")
            if isinstance(status, int):
                raise HTTPError(Response(io.BytesIO(b""), request.url, {}, status)) from exc
            raise TransportError(exc.message, cause=exc) from exc
        except UnmaskError as exc:
            gate.failures.append(exc)
            raise TransportError(exc.message, cause=exc) from exc
        except TimeoutError as exc:
            future.cancel()
            raise TransportError("request timed out", cause=exc) from exc
        return Response(io.BytesIO(body), url, resp_headers, status)


class _YoutubeDL(yt_dlp.YoutubeDL):
    """YoutubeDL whose only network access is ``FetcherRH``."""

    def __init__(self, params: dict[str, Any], gate: _Gate) -> None:
        self._gate = gate
        super().__init__(params)

    def build_request_director(self, handlers: Any, preferences: Any = None) -> Any:
        """Ignore yt-dlp's handlers (urllib, requests, curl_cffi, websockets): ours only."""
        return super().build_request_director([functools.partial(FetcherRH, gate=self._gate)], None)


def _check_only_our_handler(ydl: yt_dlp.YoutubeDL) -> None:
    """Fail closed if a yt-dlp release stopped calling our override (its own HTTP stack would run)."""
    director = getattr(ydl, "_request_director", None)
    handlers = list(getattr(director, "handlers", {}).values())
    if not handlers or not all(isinstance(h, FetcherRH) for h in handlers):
        raise UnmaskError("this yt-dlp release would use its own HTTP stack; page URLs are refused")


class _Logger:
    """yt-dlp's messages go to our log at debug level (they quote page content)."""

    def debug(self, msg: str) -> None:
        _LOGGER.debug("yt-dlp: %s", msg)

    info = debug
    warning = debug

    def error(self, msg: str) -> None:
        _LOGGER.info("yt-dlp: %s", msg)


def _options(max_height: int) -> dict[str, Any]:
    """yt-dlp parameters: metadata only, no files, no programs, no proxies, our format choice."""
    return {
        "quiet": True,
        "no_warnings": True,
        "logger": _Logger(),
        "noplaylist": True,
        "playlist_items": "1",
        "cachedir": False,
        "noprogress": True,
        "proxy": "",
        "js_runtimes": {},
        "check_formats": False,
        "socket_timeout": limits.FETCH_READ_TIMEOUT_S,
        # Best video at or under the cap, else the smallest video, else anything with video.
        "format": f"bv*[height<={max_height}]/wv*/b",
        "extractor_retries": 0,
        "retries": 0,
    }


async def resolve_page(
    url: str,
    fetcher: Fetcher,
    *,
    max_height: int = limits.STREAM_MAX_HEIGHT,
    timeout: float = limits.RESOLVE_TIMEOUT_S,
) -> ResolvedMedia:
    """Find the video behind page ``url`` with yt-dlp (network through ``fetcher`` only)."""
    gate = _Gate(fetcher, asyncio.get_running_loop())
    task = asyncio.get_running_loop().run_in_executor(None, _extract, url, gate, max_height)
    # After a timeout the thread runs on until its next request; its outcome is then dropped.
    task.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        info = await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        raise FetchFailed(f"finding the video on the page took longer than {timeout:g} s") from None
    except UnmaskError:
        raise
    except Exception as exc:  # yt-dlp's errors, and bugs in one of its ~1800 extractors
        if not isinstance(exc, yt_dlp.utils.YoutubeDLError | RequestError):
            _LOGGER.warning("yt-dlp failed unexpectedly on %s", url, exc_info=True)
        raise _explain(url, gate, exc) from None
    finally:
        gate.cancelled.set()
    return _to_resolved(url, info)


def _extract(url: str, gate: _Gate, max_height: int) -> dict[str, Any]:
    """Thread body: run yt-dlp's extractors and format selection, no download."""
    with _YoutubeDL(_options(max_height), gate) as ydl:
        _check_only_our_handler(ydl)
        info = ydl.extract_info(url, download=False, process=True)
    if info is None:
        raise yt_dlp.utils.DownloadError("no information extracted")
    entries = info.get("entries")
    if entries is not None:
        info = next((e for e in entries if e), None)
        if info is None:
            raise yt_dlp.utils.DownloadError("the page lists no video")
    return info


def _explain(url: str, gate: _Gate, exc: Exception) -> UnmaskError:
    """The clearest error for a failed extraction: a refusal, the page's own failure, or unsupported."""
    if gate.refusals:
        first = gate.refusals[0]
        return FetchRefused(f"the page led to a refused URL: {first.message}", **first.details)
    if gate.failures and gate.requests == 1:
        return gate.failures[0]  # the page itself could not be fetched
    site = urlsplit(url).hostname or url
    reason = " ".join(str(exc).replace("ERROR: ", "").split())[:200]
    return UnsupportedSite(f"no video could be found in the HTML page on {site} ({reason})", site=site)


def _to_resolved(page_url: str, info: dict[str, Any]) -> ResolvedMedia:
    """The selected format of yt-dlp's info dict as ResolvedMedia."""
    site = urlsplit(page_url).hostname or page_url
    protocol = str(info.get("protocol") or "")
    kind = _KINDS.get(protocol.split("+")[0])
    media_url = info.get("manifest_url") if kind == "dash" else info.get("url")
    if kind is None or not isinstance(media_url, str):
        what = f"protocol {protocol!r}" if protocol else "no playable format"
        raise UnsupportedSite(f"the video on {site} cannot be read ({what})", site=site)
    if info.get("vcodec") == "none":
        raise UnsupportedSite(f"the page on {site} has audio only, no video", site=site)
    extractor = str(info.get("extractor_key") or "") or None
    video_id = platform_video_id(page_url)
    if video_id is None and extractor and extractor.lower() not in _PAGE_EXTRACTORS and info.get("id"):
        video_id = f"{extractor.lower()}:{info['id']}"
    duration = info.get("duration")
    return ResolvedMedia(
        kind=kind,
        url=media_url,
        page_url=page_url,
        video_id=video_id,
        title=str(info["title"])[:300] if info.get("title") else None,
        duration=float(duration) if isinstance(duration, int | float) else None,
        extractor=extractor,
        headers=safe_headers(info.get("http_headers")),
    )
