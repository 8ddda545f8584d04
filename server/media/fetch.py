"""The SSRF-safe HTTP client every outbound request of Unmask goes through.

``Fetcher`` wraps an aiohttp session whose connector connects only to addresses that
``resolver.resolve_vetted`` returned (IP literals included), follows redirects by hand and
re-vets each hop, never decompresses, and counts body bytes against the policy's cap.

Content-Encoding: we ask for ``identity``, and a response compressed anyway is refused
(FetchFailed) rather than passed on: video is already compressed, so no honest server gzips it,
and inflating it (or handing the gzip stream to the decoder) would only invite a decompression bomb.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from multidict import CIMultiDictProxy

from server.errors import PayloadTooLarge, UnmaskError
from server.media.netguard import FetchFailed, FetchPolicy, FetchRefused, ParsedURL, parse_and_vet_url
from server.media.resolver import Resolver, SystemResolver, resolve_vetted

__all__ = ["FetchFailed", "FetchPolicy", "FetchRefused", "FetchResponse", "Fetcher"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
USER_AGENT = "Unmask/0.1 (+deepfake check; video fetch)"
# Set by the fetcher itself; a caller setting them could re-target the request (Host), turn
# compression back on, or forward someone's credentials.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "accept-encoding",
        "range",
        "authorization",
        "proxy-authorization",
        "cookie",
        "connection",
        "transfer-encoding",
        "content-length",
        "te",
        "upgrade",
    }
)
_DETAIL_CHARS = 160
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


# The connector below overrides a private aiohttp method; if a release renames it, the override
# would silently stop vetting, so refuse to import instead (tests also catch it end to end).
if not callable(getattr(aiohttp.TCPConnector, "_resolve_host", None)):  # pragma: no cover
    raise ImportError(
        "aiohttp.TCPConnector._resolve_host is gone: the SSRF-safe connector cannot vet addresses"
    )


class _VettingConnector(aiohttp.TCPConnector):
    """A TCPConnector whose every address (names and IP literals) comes from ``resolve_vetted``."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(use_dns_cache=False, ssl=ssl_context if ssl_context is not None else True)
        self._policy = policy
        self._vetting_resolver = resolver

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Any] | None = None
    ) -> list[ResolveResult]:
        """Override of aiohttp's lookup, which returns IP literals unchecked and caches answers."""
        addrs = await resolve_vetted(host, port, self._policy, self._vetting_resolver)
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(
                hostname=host,
                host=str(addr),
                port=port,
                family=socket.AF_INET6 if addr.version == 6 else socket.AF_INET,
                proto=0,
                flags=flags,
            )
            for addr in addrs
        ]


class FetchResponse:
    """One upstream response being streamed; close it (or use ``async with``) when done."""

    def __init__(self, resp: aiohttp.ClientResponse, target: ParsedURL, fetcher: Fetcher, deadline: float):
        self._resp = resp
        self._target = target
        self._fetcher = fetcher
        self._deadline = deadline
        self.bytes_read = 0

    @property
    def url(self) -> str:
        """The final URL, after redirects."""
        return str(self._target.url)

    @property
    def status(self) -> int:
        """200, or 206 for an honoured Range request."""
        return self._resp.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """Response headers as received."""
        return self._resp.headers

    @property
    def content_type(self) -> str | None:
        """The media type without parameters, lower-case; None when the server sent none."""
        media_type = self._resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        return media_type or None

    @property
    def content_length(self) -> int | None:
        """The announced body length (of this part, for 206), or None."""
        return self._resp.content_length

    @property
    def content_range(self) -> tuple[int, int, int | None] | None:
        """(first, last, total or None) from a 206 ``Content-Range``; None otherwise."""
        match = _CONTENT_RANGE.fullmatch(self._resp.headers.get("Content-Range", "").strip())
        if match is None:
            return None
        total = match.group(3)
        return int(match.group(1)), int(match.group(2)), None if total == "*" else int(total)

    async def iter_chunks(self, n: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """Yield the body in chunks of at most ``n`` bytes; PayloadTooLarge past ``max_bytes``."""
        limit = self._fetcher.policy.max_bytes
        while True:
            with self._fetcher._upstream_errors(self._target.host):
                async with asyncio.timeout_at(self._deadline):
                    chunk = await self._resp.content.read(n)
            if not chunk:
                return
            self.bytes_read += len(chunk)
            if self.bytes_read > limit:
                self.close()
                raise PayloadTooLarge(f"the video at the URL is larger than {limit} bytes", limit=limit)
            yield chunk

    def close(self) -> None:
        """Drop the connection (unread bytes are not drained)."""
        self._resp.close()

    async def __aenter__(self) -> FetchResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Fetcher:
    """``async with Fetcher(policy) as f: resp = await f.open(url)`` — the only way Unmask fetches URLs."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        resolver: Resolver | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self.resolver: Resolver = resolver or SystemResolver()
        # None: the system trust store with hostname verification (a private CA for operators and tests).
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        p = self.policy
        self._session = aiohttp.ClientSession(
            connector=_VettingConnector(p, self.resolver, self.ssl_context),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # nothing learnt on one hop is sent on the next
            trust_env=False,  # no proxy from the environment
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=p.connect_timeout,
                sock_connect=p.connect_timeout,
                sock_read=p.read_timeout,
            ),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "video/*, */*;q=0.5"},
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and every pooled connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        range: tuple[int, int | None] | None = None,
    ) -> FetchResponse:
        """GET ``url`` (redirects followed by hand, each re-vetted); the body is not read yet."""
        if self._session is None:
            raise RuntimeError("use 'async with Fetcher(...)'")
        request_headers = _request_headers(headers, range)
        deadline = asyncio.get_running_loop().time() + self.policy.total_timeout
        target = parse_and_vet_url(url, self.policy)
        hops = 0
        while True:
            try:
                with self._upstream_errors(target.host):
                    async with asyncio.timeout_at(deadline):
                        resp = await self._session.get(
                            target.url, headers=request_headers, allow_redirects=False
                        )
            except FetchRefused as exc:
                raise _after_redirect(exc, hops) from None
            if resp.status not in _REDIRECTS:
                break
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise FetchFailed(f"HTTP {resp.status} from {target.host} without a Location header")
            hops += 1
            if hops > self.policy.max_redirects:
                raise FetchRefused(f"too many redirects (max {self.policy.max_redirects})", rule="redirects")
            try:
                target = parse_and_vet_url(location, self.policy, base=target.url)
            except FetchRefused as exc:
                raise _after_redirect(exc, hops) from None
        try:
            self._check_response(resp, target)
        except BaseException:
            resp.close()
            raise
        return FetchResponse(resp, target, self, deadline)

    async def fetch_to(
        self,
        spool_writer: Callable[[bytes], None],
        url: str,
        headers: Mapping[str, str] | None = None,
        range: tuple[int, int | None] | None = None,
        chunk_size: int = CHUNK_BYTES,
    ) -> FetchResponse:
        """Stream the body of ``url`` into ``spool_writer`` (GrowingFile.write); return it, closed."""
        async with await self.open(url, headers=headers, range=range) as resp:
            async for chunk in resp.iter_chunks(chunk_size):
                spool_writer(chunk)
        return resp

    def _check_response(self, resp: aiohttp.ClientResponse, target: ParsedURL) -> None:
        """Refuse error statuses, compressed bodies and announced sizes over the cap."""
        if resp.status not in (200, 206):
            raise FetchFailed(
                f"HTTP {resp.status} from upstream {target.host}",
                upstream_status=resp.status,
                url=str(target),
            )
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise FetchFailed(f"upstream sent Content-Encoding {encoding!r} although identity was requested")
        limit = self.policy.max_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise PayloadTooLarge(
                f"the video at the URL is {resp.content_length} bytes, over the limit of {limit} bytes",
                limit=limit,
            )

    @contextlib.contextmanager
    def _upstream_errors(self, host: str) -> Iterator[None]:
        """Turn aiohttp and timeout errors into FetchFailed messages that say what happened."""
        p = self.policy
        try:
            yield
        except UnmaskError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise FetchFailed(f"timed out after {p.connect_timeout:g} s connecting to {host}") from exc
        except aiohttp.ServerTimeoutError as exc:
            raise FetchFailed(f"timed out after {p.read_timeout:g} s waiting for data from {host}") from exc
        except TimeoutError as exc:
            raise FetchFailed(f"fetch did not finish within {p.total_timeout:g} s (total timeout)") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise FetchFailed(f"TLS certificate of {host} is not valid: {exc.certificate_error}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise FetchFailed(
                f"could not connect to {host}: {exc.os_error.strerror or exc.os_error}"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise FetchFailed(f"upstream {host} broke off the body: {_brief(exc)}") from exc
        except aiohttp.ClientResponseError as exc:
            raise FetchFailed(
                f"upstream {host} sent an invalid HTTP response: {_brief(exc.message)}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise FetchFailed(f"fetch from {host} failed: {_brief(exc)}") from exc


def _brief(detail: object) -> str:
    """At most one short line of an upstream-influenced error text (aiohttp quotes raw bytes)."""
    text = " ".join(str(detail).split()) or type(detail).__name__
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _after_redirect(exc: FetchRefused, hops: int) -> FetchRefused:
    """Say that a refusal happened on a redirect hop (the first URL looked fine)."""
    if hops == 0:
        return exc
    return FetchRefused(f"redirect {hops} refused: {exc.message}", **{**exc.details, "redirect": hops})


def _request_headers(
    headers: Mapping[str, str] | None, range: tuple[int, int | None] | None
) -> dict[str, str]:
    """Caller headers plus Range; reserved headers are a programming error."""
    out = dict(headers or {})
    bad = sorted(k for k in out if k.lower() in _RESERVED_HEADERS)
    if bad:
        raise ValueError(f"headers {bad} are set by the fetcher, not by callers")
    if range is not None:
        start, end = range
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range {range}")
        out["Range"] = f"bytes={start}-{'' if end is None else end}"
    return out
