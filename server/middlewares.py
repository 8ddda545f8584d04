"""Request ids and the one place where errors become JSON."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from server.errors import UnmaskError
from server.keys import request_id_key

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
    except Exception:
        _LOGGER.exception("request %s: unexpected error", request_id)
        return _json_error(500, "internal", "internal server error", request_id)
    if not response.prepared:
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
    return response
