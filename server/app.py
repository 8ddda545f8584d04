"""The aiohttp application factory: ``create_app(settings)``; it never reads env or argv."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from server import limits
from server.analysis.runtime import Runtime
from server.api import setup_routes
from server.api.url_checks import resume_url_check
from server.auth_middleware import auth_middleware, body_limit_middleware
from server.db import cache
from server.db.engine import create_engine, fill_pool, session_factory
from server.jobs import JobManager
from server.keys import (
    celery_key,
    engine_key,
    executor_key,
    fetcher_key,
    jobs_key,
    metrics_key,
    runtime_key,
    sessions_key,
    settings_key,
)
from server.media.fetch import Fetcher, FetchPolicy
from server.metrics import Metrics, metrics_middleware
from server.middlewares import cors_middleware, error_middleware, response_headers
from server.purify_client import PurifyDispatcher
from server.recovery import recover
from server.settings import Settings

_LOGGER = logging.getLogger(__name__)


async def spool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The upload spool folder; partial files of a previous run are orphans and go."""
    spool = app[settings_key].data_dir / "uploads"
    spool.mkdir(parents=True, exist_ok=True)
    for stale in spool.glob("unmask-upload-*.part"):
        stale.unlink(missing_ok=True)
    yield


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The async engine and session factory (interrupted checks are recovered in jobs_ctx)."""
    settings = app[settings_key]
    engine = create_engine(settings.resolved_database_url)
    await fill_pool(engine)
    app[engine_key] = engine
    app[sessions_key] = session_factory(engine)
    yield
    await engine.dispose()


async def executor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Threads that run decode and inference off the event loop."""
    executor = ThreadPoolExecutor(
        max_workers=app[settings_key].max_running_checks, thread_name_prefix="check"
    )
    app[executor_key] = executor
    yield
    executor.shutdown(wait=True, cancel_futures=True)


async def model_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the detector (hash and card verified) once, off the event loop."""
    settings = app[settings_key]
    loop = asyncio.get_running_loop()
    app[runtime_key] = await loop.run_in_executor(
        app[executor_key],
        lambda: Runtime.load(
            settings.model_dir,
            device=settings.device,
            face_detector=settings.face_detector,
            threads=settings.op_threads,
        ),
    )
    app[runtime_key].enable_batching()
    yield
    app[runtime_key].close()


async def frame_index_ctx(app: web.Application) -> AsyncIterator[None]:
    """The active model's frame hashes in memory, loaded in the background (see frame_mirror)."""
    settings, sessions = app[settings_key], app[sessions_key]
    if settings.cache_index_max_rows > 0:
        ref = cache.model_ref(app[runtime_key].detector.card)
        await cache.start_mirror(sessions, ref, settings.cache_index_max_rows)
    yield
    await cache.stop_mirrors(sessions)


def fetch_policy(settings: Settings) -> FetchPolicy:
    """The SSRF policy of outbound fetches, with the operator's explicit allow-list."""
    allowed = []
    for item in filter(None, (x.strip() for x in settings.fetch_allow_hosts.split(","))):
        host, _, port = item.rpartition(":")
        allowed.append((host.strip("[]"), int(port)))
    return FetchPolicy(allow_hosts=frozenset(allowed), max_bytes=settings.max_upload_bytes)


async def fetcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one SSRF-safe HTTP client of the process."""
    async with Fetcher(fetch_policy(app[settings_key])) as fetcher:
        app[fetcher_key] = fetcher
        yield


async def celery_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Celery client that queues purification tasks (it connects lazily, on first send)."""
    from worker.celery_app import make_celery

    celery = make_celery(app[settings_key])
    app[celery_key] = celery
    yield
    celery.close()


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The job manager; on shutdown running checks are stopped and recorded as interrupted."""
    settings, metrics = app[settings_key], app[metrics_key]
    card = app[runtime_key].detector.card
    purifier = None
    if settings.purify:
        purifier = PurifyDispatcher(
            settings, app[sessions_key], app[celery_key], app[executor_key], card, metrics=metrics
        )
    jobs = JobManager(
        settings, app[sessions_key], app[runtime_key], app[executor_key], purifier, metrics=metrics
    )
    app[jobs_key] = jobs
    refetch = functools.partial(resume_url_check, app)
    await recover(jobs, app[sessions_key], settings.data_dir, settings.instance_id, refetch=refetch)
    yield
    await jobs.close()


async def gc_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start-up's objects (modules, torch, the detector: ~270k) leave the cyclic collector's view.

    A full collection over them took 120-130 ms of the event loop (measured in a process with the
    default detector loaded); requests slowly promote survivors into the oldest generation, so one
    came every 2-30 s at 300-500 cache look-ups/s (docs/BENCHMARKS.md) and every request queued
    behind it waited. Frozen, a full collection only walks what was allocated since start-up.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def create_app(settings: Settings) -> web.Application:
    """Build the application for ``settings``."""
    origins = frozenset(o.strip() for o in settings.cors_origins.split(",") if o.strip())
    app = web.Application(
        middlewares=[
            metrics_middleware,
            cors_middleware(origins),
            error_middleware,
            auth_middleware(settings),
            body_limit_middleware(settings),
        ],
        client_max_size=limits.MAX_JSON_BYTES,
    )
    app[settings_key] = settings
    app[metrics_key] = Metrics()
    app[metrics_key].watch(app)
    app.on_response_prepare.append(response_headers(origins))
    app.cleanup_ctx.extend(
        [
            spool_ctx,
            database_ctx,
            executor_ctx,
            model_ctx,
            frame_index_ctx,
            fetcher_ctx,
            celery_ctx,
            jobs_ctx,
            gc_ctx,
        ]
    )
    setup_routes(app)
    return app
