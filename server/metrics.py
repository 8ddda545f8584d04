"""Prometheus metrics: one registry per application, request latency, check and cache counters.

Each app owns a ``Metrics`` (its own ``CollectorRegistry``, never the global default), so several
apps in one test process do not clash. Counters move through the small methods below (called
by the job manager); gauges that describe the present (checks by state, queue depth and age,
busy workers, the model) are computed at scrape time from the app itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from server.db.models import CheckStatus
from server.keys import executor_key, jobs_key, metrics_key, runtime_key

# Request latency buckets (s): JSON look-ups take milliseconds, an upload or an SSE stream
# as long as its video; past 60 s the exact value no longer matters to an alert.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Purification time per crop (s): ~1 s on a GPU with the fast preset, minutes with the paper's.
PURIFY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

# Route label of requests that matched no route: one value, so scanners cannot blow up the
# label cardinality with made-up paths.
UNMATCHED_ROUTE = "unmatched"

# Cache key kinds a look-up may report (anything else is counted as "other").
CACHE_KINDS = ("url", "video_id", "sha256", "frames")


def _package_version() -> str:
    try:
        return metadata.version("unmask")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The metric objects of one application and the calls that move them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "unmask_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.checks_started = Counter(
            "unmask_checks_started", "Checks started by this process, by source.", ["source"], registry=r
        )
        self.checks_finished = Counter(
            "unmask_checks_finished",
            "Checks ended by this process: done (label = verdict label) or failed (label = error code).",
            ["status", "label"],
            registry=r,
        )
        self.frames_scored = Counter(
            "unmask_frames_scored", "Sampled frames scored by the detector (rate() = frames/s).", registry=r
        )
        self.cache_lookups = Counter(
            "unmask_cache_lookups",
            "Verdict cache look-ups by key kind and result (hit or miss).",
            ["kind", "result"],
            registry=r,
        )
        self.purify_seconds = Histogram(
            "unmask_purify_seconds",
            "Deep Image Prior purification time per face crop, by outcome.",
            ["outcome"],
            buckets=PURIFY_BUCKETS,
            registry=r,
        )
        self.purify_queue_depth = Gauge(
            "unmask_purify_queue_depth", "Purification tasks sent and not yet answered.", registry=r
        )
        self.purify_workers = Gauge(
            "unmask_purify_workers", "Purification workers that answered the last ping.", registry=r
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    # -------------------------------------------------------------- calls for the job manager
    def check_started(self, source: str) -> None:
        """A check was accepted (source: upload, url, frames, file)."""
        self.checks_started.labels(source).inc()

    def check_finished(self, status: str, label: str) -> None:
        """A check ended: ``("done", verdict label)`` or ``("failed", error code)``."""
        self.checks_finished.labels(status, label).inc()

    def frames(self, n: int = 1) -> None:
        """``n`` sampled frames were scored."""
        self.frames_scored.inc(n)

    def cache_lookup(self, kind: str, hit: bool) -> None:
        """One cache look-up by ``kind`` (url, video_id, sha256, frames) ended in a hit or a miss."""
        kind = kind if kind in CACHE_KINDS else "other"
        self.cache_lookups.labels(kind, "hit" if hit else "miss").inc()

    def purified(self, seconds: float, outcome: str = "done") -> None:
        """One crop's purification took ``seconds`` and ended ``done`` or ``failed``."""
        self.purify_seconds.labels(outcome).observe(seconds)

    def watch(self, app: web.Application) -> None:
        """Add the scrape-time gauges that read ``app`` (jobs, executor, model)."""
        self.registry.register(AppCollector(app))


class AppCollector:
    """Gauges computed when Prometheus scrapes: they describe the app as it is right now."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def describe(self) -> Iterable[Metric]:
        """Names only: collecting at registration would read an app that has not started."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        """The families with their current values."""
        checks, depth, age, workers, busy, model, build = self._families()
        jobs = self._jobs()
        counts = dict.fromkeys(CheckStatus.ALL, 0)
        oldest_queued: float | None = None
        now = time.perf_counter()
        for job in jobs:
            status = getattr(job, "status", None)
            if status in counts and not job.done.is_set():
                counts[status] += 1
            if status == CheckStatus.QUEUED and not job.done.is_set():
                started = getattr(job, "started", now)
                oldest_queued = started if oldest_queued is None else min(oldest_queued, started)
        for state in CheckStatus.ACTIVE:
            checks.add_metric([state], counts[state])
        depth.add_metric(["checks"], counts[CheckStatus.QUEUED])
        age.add_metric(["checks"], 0.0 if oldest_queued is None else now - oldest_queued)
        yield checks
        yield depth
        yield age
        executor = self.app.get(executor_key)
        if executor is not None:
            workers.add_metric([], getattr(executor, "_max_workers", 0))
            yield workers
            busy.add_metric([], counts[CheckStatus.RUNNING] + counts[CheckStatus.PURIFYING])
            yield busy
        runtime = self.app.get(runtime_key)
        if runtime is not None:
            card = runtime.detector.card
            model.add_metric(
                [],
                {
                    "id": card.id,
                    "version": card.version,
                    "architecture": card.architecture,
                    "demo": str(card.demo).lower(),
                },
            )
            yield model
        build.add_metric([], {"version": _package_version()})
        yield build

    @staticmethod
    def _families() -> tuple[Any, ...]:
        return (
            GaugeMetricFamily("unmask_checks", "Checks running in this process, by state.", labels=["state"]),
            GaugeMetricFamily(
                "unmask_queue_depth", "Work waiting for a free worker, by queue.", labels=["queue"]
            ),
            GaugeMetricFamily(
                "unmask_queue_oldest_age_seconds",
                "Age of the oldest item waiting in a queue (0 when empty).",
                labels=["queue"],
            ),
            GaugeMetricFamily("unmask_check_workers", "Threads that decode and score checks."),
            GaugeMetricFamily("unmask_check_workers_busy", "Check threads busy right now."),
            InfoMetricFamily("unmask_model", "The active detector (id, version, architecture, demo)."),
            InfoMetricFamily("unmask_build", "The Unmask package version."),
        )

    def _jobs(self) -> list[Any]:
        jobs = self.app.get(jobs_key)
        return [] if jobs is None else list(jobs.jobs.values())


def route_label(request: web.Request) -> str:
    """The matched route's template (``/v1/checks/{id}``), never the concrete path."""
    info = request.match_info
    resource = info.route.resource if info is not None and info.route is not None else None
    if resource is None or getattr(info, "http_exception", None) is not None:
        return UNMATCHED_ROUTE
    return resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe every request's latency under its route template and final status."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app.get(metrics_key)
        if metrics is not None:
            metrics.request_seconds.labels(request.method, route_label(request), str(status)).observe(
                time.perf_counter() - start
            )
