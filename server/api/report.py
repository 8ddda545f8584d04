"""``GET /checks/{id}``: the human-readable report page (public by id; ids are 128-bit random)."""

from __future__ import annotations

import re

from aiohttp import web

from server.db import repo
from server.db.thumbnails import get_thumbnails
from server.keys import runtime_key, sessions_key
from server.report.html import SECURITY_HEADERS
from server.report.render import not_found_page, report_page

_CHECK_ID = re.compile(r"[0-9a-f]{32}")


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS)


async def report(request: web.Request) -> web.Response:
    """The report of one check; an unknown id gets an HTML 404 (a person is reading)."""
    check_id = request.match_info["id"]
    sessions = request.app[sessions_key]
    check = await repo.get_check(sessions, check_id) if _CHECK_ID.fullmatch(check_id) else None
    if check is None:
        return _html(not_found_page(check_id), status=404)
    thumbs = await get_thumbnails(sessions, check_id)
    runtime = request.app.get(runtime_key)
    card = runtime.detector.card.to_dict() if runtime is not None else None
    response = _html(report_page(check, thumbs, card))
    # A running check's page changes; a finished one does not.
    response.headers["Cache-Control"] = "no-cache" if check.verdict is None else "private, max-age=300"
    return response


def register(app: web.Application) -> None:
    """Routes of this module."""
    app.router.add_get("/checks/{id}", report)
