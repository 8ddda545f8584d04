"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from server.db import cache
from server.db.engine import ping
from server.keys import engine_key, runtime_key, sessions_key


async def healthz(request: web.Request) -> web.Response:
    """The process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers and the model is loaded."""
    problems: dict[str, str] = {}
    try:
        await ping(request.app[engine_key])
    except Exception as exc:  # any driver error means "not ready"
        problems["database"] = f"{type(exc).__name__}: {exc}"[:300]
    if runtime_key not in request.app:
        problems["model"] = "not loaded"
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    # Informational: near-duplicate look-ups use the database until the index is ready.
    return web.json_response(
        {"status": "ready", "frame_index": cache.mirror_status(request.app[sessions_key])}
    )


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
