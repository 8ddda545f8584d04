"""The active detector's model card."""

from __future__ import annotations

from aiohttp import web

from server.keys import runtime_key


async def active_model(request: web.Request) -> web.Response:
    """``GET /v1/models``: the card of the detector every verdict comes from."""
    card = request.app[runtime_key].detector.card
    return web.json_response({"active": card.to_dict()})


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_get("/v1/models", active_model)
