"""Access control on the request path: tokens, rate limits, check caps, body caps, a redacting access log.

Order in ``create_app``: ``[cors, error, auth_middleware(settings), body_limit_middleware(settings)]``
so preflights are answered first, request ids exist when these refuse, and a refused request
never has its body read.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from yarl import URL

from server import limits
from server.auth import (
    RateLimited,
    TokenInfo,
    TokenVerifier,
    TooManyChecks,
    Unauthorized,
    auth_required,
    is_loopback,
)
from server.errors import PayloadTooLarge, UnmaskError
from server.keys import jobs_key, request_id_key, sessions_key
from server.middlewares import REQUEST_ID_HEADER
from server.ratelimit import ConcurrencyLimiter, RateLimiter
from server.settings import Settings

_LOGGER = logging.getLogger(__name__)

# Reachable without a token (GET/HEAD only): operations probes, the API description and the
# human-readable report page, which is linked from verdicts and shared with people.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = ("/checks/", "/docs/", "/static/")
METRICS_PATH = "/metrics"

CHECKS_ROUTE = "/v1/checks"
EVENTS_ROUTE = "/v1/checks/{id}/events"
FRAMES_ROUTE = "/v1/checks/{id}/frames"

# The query parameter carrying a token where a header cannot: the browser's EventSource API
# has no way to set Authorization, so the events stream alone accepts it. Query strings end up
# in logs and proxies, hence nowhere else (and our access log redacts it).
QUERY_TOKEN = "access_token"

# Requests with bad tokens a client (IP) may make per minute before it is answered 429 without
# a database look-up: slows token guessing and keeps floods of junk tokens off the database.
FAILED_AUTH_PER_MINUTE = 30
FAILED_AUTH_BURST = 10

# How long a refused check start should wait: checks take seconds to minutes, so sooner is noise.
TOO_MANY_CHECKS_RETRY_S = 5

# Multipart framing around the payload: boundaries, part headers and the short form fields
# (uploads.py allows 16 fields of 8 KiB).
MULTIPART_OVERHEAD_BYTES = 256 * 1024
# Frames requests: MAX_FRAMES_PER_REQUEST JPEGs of MAX_FRAME_JPEG_BYTES each, plus framing.
FRAMES_BODY_BYTES = limits.MAX_FRAMES_PER_REQUEST * limits.MAX_FRAME_JPEG_BYTES + MULTIPART_OVERHEAD_BYTES


class UnsupportedEncoding(UnmaskError):
    """A compressed request body: it would be inflated past every byte cap we count."""

    status, code = 415, "unsupported_content_encoding"


@dataclass
class AccessControl:
    """The per-application state of access control."""

    settings: Settings
    required: bool
    verifier: TokenVerifier = field(default_factory=TokenVerifier)
    limiter: RateLimiter = field(init=False)
    failures: RateLimiter = field(
        default_factory=lambda: RateLimiter(FAILED_AUTH_PER_MINUTE, FAILED_AUTH_BURST)
    )
    running: ConcurrencyLimiter = field(default_factory=ConcurrencyLimiter)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.rate_per_minute, self.settings.rate_burst)


def _canonical(request: web.Request) -> str | None:
    resource = getattr(request.match_info.route, "resource", None)
    return resource.canonical if resource is not None else None


def is_public(request: web.Request, metrics_public: bool) -> bool:
    """Whether ``request`` needs no token: probes, report page, API docs, CORS preflights."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return True
    if request.method not in ("GET", "HEAD"):
        return False
    canonical = _canonical(request) or ""
    if canonical.startswith("/v1"):
        return False
    path = request.path
    return (
        path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or (metrics_public and path == METRICS_PATH)
    )


def presented_token(request: web.Request) -> str | None:
    """The bearer token of the request, if it carries one; a malformed one is a 401."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    if QUERY_TOKEN in request.query:
        if request.method == "GET" and _canonical(request) == EVENTS_ROUTE:
            return request.query[QUERY_TOKEN]
        raise Unauthorized(
            f"?{QUERY_TOKEN}= is accepted only by GET /v1/checks/{{id}}/events (EventSource cannot "
            "send headers); send 'Authorization: Bearer <token>' instead"
        )
    return None


def error_response(request: web.Request, exc: UnmaskError) -> web.Response:
    """The JSON error body of ``error_middleware``, plus the error's own headers."""
    request_id = request.get(request_id_key, "")
    body = {"error": {"code": exc.code, "message": exc.message, "request_id": request_id, **exc.details}}
    headers = {REQUEST_ID_HEADER: request_id, **getattr(exc, "headers", {})}
    return web.json_response(body, status=exc.status, headers=headers)


async def _authenticate(request: web.Request, access: AccessControl, anonymous_ok: bool) -> TokenInfo | None:
    secret = presented_token(request)
    if secret is None:
        if anonymous_ok:
            return None
        raise Unauthorized("this server requires an API token: send 'Authorization: Bearer <token>'")
    remote = request.remote or ""
    throttle = not is_loopback(remote)
    if throttle and (retry := access.failures.peek(remote)) is not None:
        raise RateLimited("too many requests with invalid tokens", retry_after_s=retry)
    info = await access.verifier.verify(request.app[sessions_key], secret)
    if info is None:
        if throttle:
            access.failures.check(remote)
        raise Unauthorized("the API token is unknown or revoked")
    return info


def _hold_until_done(request: web.Request, response: web.StreamResponse, release: Callable[[], None]) -> None:
    """Keep the check slot while the check this response started runs; else give it back now."""
    task = None
    if response.status == 202 and isinstance(response, web.Response) and isinstance(response.body, bytes):
        try:
            body = json.loads(response.body)
        except ValueError:
            body = {}
        # Joining someone's running check costs nothing extra, so it holds no slot.
        if isinstance(body, dict) and not body.get("joined") and isinstance(body.get("id"), str):
            job = request.app[jobs_key].get(body["id"])
            task = getattr(job, "task", None)
    if task is None or task.done():
        release()
    else:
        task.add_done_callback(lambda _task: release())


def auth_middleware(settings: Settings):  # type: ignore[no-untyped-def]
    """Require a valid token where ``settings.auth`` says so; apply per-token limits."""
    access = AccessControl(settings=settings, required=auth_required(settings))

    @web.middleware
    async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request, settings.metrics_public):
            return await handler(request)
        release: Callable[[], None] | None = None
        try:
            info = None
            if settings.auth != "never":
                info = await _authenticate(request, access, anonymous_ok=not access.required)
            remote = request.remote or ""
            # The local user of an embedded server is not throttled: the limits protect a shared one.
            if info is not None or not is_loopback(remote):
                key = f"token:{info.id}" if info is not None else f"ip:{remote}"
                rate = info.rate_per_minute if info is not None else None
                if (retry := access.limiter.check(key, rate_per_minute=rate)) is not None:
                    raise RateLimited("request rate limit reached", retry_after_s=retry)
                if request.method == "POST" and _canonical(request) == CHECKS_ROUTE:
                    cap = (info and info.max_concurrent_checks) or settings.max_concurrent_checks_per_token
                    if not access.running.acquire(key, cap):
                        raise TooManyChecks(
                            f"{cap} checks are already running for this token",
                            retry_after_s=TOO_MANY_CHECKS_RETRY_S,
                            limit=cap,
                        )
                    release = functools.partial(access.running.release, key)
        except (Unauthorized, RateLimited) as exc:
            return error_response(request, exc)
        if release is None:
            return await handler(request)
        try:
            response = await handler(request)
        except BaseException:
            release()
            raise
        _hold_until_done(request, response, release)
        return response

    return access_control


def body_cap(request: web.Request, settings: Settings) -> int:
    """The most body bytes the route of ``request`` accepts."""
    canonical = _canonical(request)
    if (
        request.method == "POST"
        and canonical == CHECKS_ROUTE
        and request.content_type == "multipart/form-data"
    ):
        return settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    if request.method == "POST" and canonical == FRAMES_ROUTE:
        return FRAMES_BODY_BYTES
    return limits.MAX_JSON_BYTES


def body_limit_middleware(settings: Settings):  # type: ignore[no-untyped-def]
    """413 from the announced Content-Length, before a byte of the body is read.

    Bodies without a length (chunked) are still counted while streaming by the handlers
    (GrowingFile, client_max_size, the frames reader).
    """

    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise UnsupportedEncoding(f"compressed request bodies ({encoding}) are not accepted")
            cap = body_cap(request, settings)
            length = request.content_length
            if length is not None and length > cap:
                raise PayloadTooLarge(
                    f"the body announces {length} bytes; this endpoint accepts at most {cap}", limit=cap
                )
        return await handler(request)

    return body_limit


def redacted(url: URL) -> str:
    """``url`` as logged: the value of an ``access_token`` query parameter is replaced."""
    if QUERY_TOKEN not in url.query:
        return str(url)
    return str(url.update_query({QUERY_TOKEN: "REDACTED"}))


class RedactingAccessLogger(AbstractAccessLogger):
    """The access log line, with tokens passed in the query redacted (``run_app(access_log_class=…)``)."""

    @property
    def enabled(self) -> bool:
        """Skip formatting when nobody listens."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """One line: peer, request line (redacted), status, bytes, seconds."""
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.3f',
            request.remote,
            request.method,
            redacted(request.rel_url),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time,
        )
