"""Request ids and the one place where errors become JSON."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler

from server.errors import UnmaskError
from server.keys import request_id_key
from server.log_context import request_id_var

_LOGGER = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"


def _json_error(status: int, code: str, message: str, request_id: str, **details: object) -> web.Response:
    body = {"error": {"code": code, "message": message, "request_id": request_id, **details}}
    return web.json_response(body, status=status, headers={REQUEST_ID_HEADER: request_id})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id and turn every error into a JSON body with a stable code."""
    request_id = request.headers.get(REQUEST_ID_HEADER, "")[:64] or uuid.uuid4().hex
    request[request_id_key] = request_id
    request_id_var.set(request_id)
    try:
        response = await handler(request)
    except UnmaskError as exc:
        if exc.status >= 500:
            _LOGGER.error("request %s failed: %s", request_id, exc.message)
        return _json_error(exc.status, exc.code, exc.message, request_id, **exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 413:
            code, message = "payload_too_large", "request body is larger than this endpoint accepts"
        return _json_error(exc.status, code, message, request_id)
    except BadHttpMessage as exc:  # e.g. a malformed part header met while reading a multipart body
        return _json_error(400, "bad_request", f"malformed request body: {exc.message}"[:300], request_id)
    except Exception:
        _LOGGER.exception("request %s: unexpected error", request_id)
        return _json_error(500, "internal", "internal server error", request_id)
    return response


CORS_ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Request-Id"
CORS_ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
# Browsers may cache a preflight this long (seconds); Chromium caps it at 2 hours.
CORS_MAX_AGE_S = 600


def cors_middleware(origins: frozenset[str]):  # type: ignore[no-untyped-def]
    """Answer CORS preflights for the configured extension origins only."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (
            request.method == "OPTIONS"
            and origin is not None
            and "Access-Control-Request-Method" in request.headers
        ):
            if origin not in origins:
                return _json_error(403, "origin_not_allowed", f"origin {origin!r} is not allowed", "")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                    "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                    "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                    "Vary": "Origin",
                },
            )
        return await handler(request)

    return cors


def response_headers(origins: frozenset[str]):  # type: ignore[no-untyped-def]
    """An on_response_prepare hook: request id and CORS headers on every response, streams included."""

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(request_id_key)
        if request_id:
            response.headers.setdefault(REQUEST_ID_HEADER, request_id)
        origin = request.headers.get("Origin")
        if origin is not None and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Location, X-Request-Id, Retry-After"
            response.headers["Vary"] = "Origin"

    return prepare
