"""``GET /openapi.json`` and ``GET /docs``: the API description, for machines and for people."""

from __future__ import annotations

from aiohttp import web

from server.openapi import openapi_document
from server.report.apidocs import docs_page
from server.report.html import SECURITY_HEADERS


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return web.json_response(openapi_document(), headers={"Cache-Control": "public, max-age=300"})


async def docs(request: web.Request) -> web.Response:
    """The same document as an HTML page."""
    return web.Response(
        text=docs_page(openapi_document()), content_type="text/html", headers=SECURITY_HEADERS
    )


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
