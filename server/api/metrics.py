"""``GET /metrics``: the app's Prometheus registry in the text (or OpenMetrics) format."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from server.keys import metrics_key


async def metrics(request: web.Request) -> web.Response:
    """Every metric of this process, in the format the scraper asks for."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[metrics_key].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_get("/metrics", metrics)
