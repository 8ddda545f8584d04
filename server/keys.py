"""Every typed application key, in one place."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web
from celery import Celery
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from server.media.fetch import Fetcher
from server.settings import Settings

if TYPE_CHECKING:
    pass

settings_key = web.AppKey("settings", Settings)
engine_key = web.AppKey("engine", AsyncEngine)
sessions_key = web.AppKey("sessions", async_sessionmaker)
executor_key = web.AppKey("executor", ThreadPoolExecutor)
runtime_key = web.AppKey("runtime", "Runtime")
jobs_key = web.AppKey("jobs", "JobManager")
fetcher_key = web.AppKey("fetcher", Fetcher)

request_id_key = web.RequestKey("request_id", str)
metrics_key = web.AppKey("metrics", "Metrics")
celery_key = web.AppKey("celery", Celery)
