"""Thin aiohttp handlers, one module per resource; ``setup_routes`` wires them."""

from __future__ import annotations

from aiohttp import web

from server.api import checks, docs, frames, health, metrics, models, report, verdicts


def setup_routes(app: web.Application) -> None:
    """Register every route of the API."""
    health.register(app)
    checks.register(app)
    frames.register(app)
    models.register(app)
    verdicts.register(app)
    metrics.register(app)
    docs.register(app)
    report.register(app)
