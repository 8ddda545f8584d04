"""Run checks as background jobs and fan their progress out to SSE subscribers.

One ``Job`` per running check lives in memory: it keeps the events so far (so a late
subscriber gets the whole story) and the queues of live subscribers. The database holds the
durable state: frames are written in small batches while the check runs, the verdict at the
end. Once a job is finished and forgotten, subscribers are served from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy.ext.asyncio import async_sessionmaker

from server.analysis.frames import CROP_MARGIN, FrameResult, ThumbnailPicker, score_frame
from server.analysis.lossless import CapturedFrame, covers_crops
from server.analysis.run import Cancelled, analyze_video, media_dict
from server.analysis.runtime import Runtime
from server.analysis.sequential import SequentialTest
from server.analysis.verdict import aggregate, is_tampered
from server.db import cache, repo
from server.db.engine import retry_db
from server.db.models import CheckStatus
from server.db.thumbnails import ThumbnailItem, save_thumbnails
from server.errors import Conflict, MediaLimitExceeded, NotFound, UnmaskError
from server.media.decode import DecodeLimits, MediaInfo
from server.media.sandbox import default_pool
from server.metrics import Metrics
from server.purify_client import PurifyDispatcher
from server.report.thumbs import crop_thumbnail
from server.settings import Settings

_LOGGER = logging.getLogger(__name__)

# Frames are written to the database at least this often while a check runs, so a reader
# on another server (or after a crash) sees progress without one write per frame.
FRAME_FLUSH_INTERVAL_S = 0.25

# After this many sampled frames the job asks the cache whether a near-duplicate of the video
# was judged before (a re-encode or re-upload); a hit ends the check with that verdict.
CACHE_PROBE_FRAMES = 6

# Suspicious frames are gathered this long before their crops go out as one task: fewer,
# larger tasks let the worker fit many crops in one batch.
PURIFY_BATCH_WAIT_S = 0.5

# A finished job stays in memory this long for subscribers that arrive just after the end;
# afterwards its events are rebuilt from the database.
FINISHED_JOB_TTL_S = 60.0

Event = tuple[int, str, dict[str, Any]]


def _unchecked(verdict: dict[str, Any]) -> bool:
    """Whether the tamper check was on but saw too few of the verdict's face frames to ever call
    it tampered (captured JPEG frames without lossless patches). Such a verdict is not indexed for
    reuse: an adversarial video would otherwise be answered from the cache as it fooled the
    detector, for everyone."""
    tamper = verdict["tamper"]
    return (
        tamper["threshold"] is not None
        and verdict["faces"]["frames_with_faces"] > 0
        and not is_tampered(tamper["checked_frames"], tamper["checked_frames"])
    )


def new_check_id() -> str:
    """A random, unguessable check id (the report page is public by id)."""
    return uuid.uuid4().hex


@dataclass
class Job:
    """The in-memory side of one running check."""

    id: str
    status: str = CheckStatus.QUEUED
    events: list[Event] = field(default_factory=list)
    subscribers: set[asyncio.Queue[Event | None]] = field(default_factory=set)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: UnmaskError | None = None
    verdict: dict[str, Any] | None = None
    info: MediaInfo | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    pending_frames: list[FrameResult] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    flush_stop: asyncio.Event = field(default_factory=asyncio.Event)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    first_frame_s: float | None = None
    results: list[FrameResult] = field(default_factory=list)
    keys: Callable[[], list[tuple[str, str]]] | None = None
    cache_hit: cache.CacheHit | None = None
    superseded_by: str | None = None
    source_url: str | None = None
    pump: asyncio.Task[None] | None = None
    media_extra: Callable[[], dict[str, Any]] | None = None
    frames_mode: bool = False
    frames_final: asyncio.Event = field(default_factory=asyncio.Event)
    last_activity: float = 0.0
    next_index: int = 0
    inflight: int = 0
    purify_queue: list[FrameResult] = field(default_factory=list)
    purify_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    purify_timer: asyncio.TimerHandle | None = None
    request_id: str | None = None
    full: bool = False
    thumbnails: list[ThumbnailItem] = field(default_factory=list)
    thumb_picker: ThumbnailPicker = field(default_factory=ThumbnailPicker)
    full: bool = False
    thumbnails: list[ThumbnailItem] = field(default_factory=list)
    thumb_picker: ThumbnailPicker = field(default_factory=ThumbnailPicker)
    detect_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def publish(self, name: str, data: dict[str, Any]) -> None:
        """Record an event and hand it to every live subscriber."""
        event = (len(self.events) + 1, name, data)
        self.events.append(event)
        for queue in self.subscribers:
            queue.put_nowait(event)

    def close_subscribers(self) -> None:
        """Tell every subscriber the stream has ended."""
        for queue in self.subscribers:
            queue.put_nowait(None)


class JobManager:
    """Starts checks on the executor, tracks them, and streams their events."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker,
        runtime: Runtime,
        executor: ThreadPoolExecutor,
        purifier: PurifyDispatcher | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.purifier = purifier
        self.metrics = metrics or Metrics()
        self.sessions = sessions
        self.runtime = runtime
        self.executor = executor
        self.jobs: dict[str, Job] = {}
        # Canonical URL → the check id being created for it (single flight within this process).
        self.url_claims: dict[str, asyncio.Future[str]] = {}
        # Start-up recovery that has not become a job yet (a URL check being fetched again).
        self.resuming: set[asyncio.Task[None]] = set()
        self.model_ref = cache.model_ref(runtime.detector.card)
        self.cache_ttl = timedelta(seconds=settings.cache_ttl_s)
        if settings.decode_sandbox:
            default_pool().prewarm()  # the decoder zygote's ~0.7 s start-up, off the first check
        self.limits = DecodeLimits(
            max_duration_s=settings.max_duration_s,
            max_frame_pixels=settings.max_frame_pixels,
            max_sampled_frames=settings.max_sampled_frames,
        )

    async def lookup_key(self, kind: str, value: str) -> cache.CacheHit | None:
        """An exact-key cache look-up for the active model, counted in the metrics."""
        hit = await cache.lookup_key(self.sessions, kind, value, self.model_ref)
        self.metrics.cache_lookup(kind, hit is not None)
        return hit

    async def lookup_frames(self, hashes: list[int]) -> cache.CacheHit | None:
        """A near-duplicate look-up for the active model, counted in the metrics."""
        hit = await cache.lookup_frames(self.sessions, hashes, self.model_ref)
        self.metrics.cache_lookup("frames", hit is not None)
        return hit

    def running_for_url(self, canonical: str) -> str | None:
        """The id of a check of this process that is fetching/analysing ``canonical`` now."""
        for job in self.jobs.values():
            if job.source_url == canonical and not job.done.is_set():
                return job.id
        return None

    def get(self, check_id: str) -> Job | None:
        """The in-memory job, when this process runs (or just ran) it."""
        return self.jobs.get(check_id)

    def start(
        self,
        check_id: str,
        source: BinaryIO | str,
        *,
        container: str | None,
        cleanup: Callable[[], None] | None = None,
        keys: Callable[[], list[tuple[str, str]]] | None = None,
        source_url: str | None = None,
        request_id: str | None = None,
        full: bool = False,
    ) -> Job:
        """Start analysing ``source`` for the already-stored check ``check_id``.

        ``keys`` is called when the verdict is stored and names the exact cache keys
        (sha256, url, video_id) known by then.
        """
        job = Job(id=check_id, keys=keys, source_url=source_url, request_id=request_id, full=full)
        self.jobs[check_id] = job
        job.publish("progress", {"status": CheckStatus.QUEUED, "frames": 0})
        self.metrics.check_started("url" if source_url else "upload")
        job.task = asyncio.create_task(self._run(job, source, container, cleanup), name=f"check-{check_id}")
        return job

    async def _run(
        self, job: Job, source: BinaryIO | str, container: str | None, cleanup: Callable[[], None] | None
    ) -> None:
        loop = asyncio.get_running_loop()
        flusher = asyncio.create_task(self._flush_loop(job))

        async def stop_flusher() -> None:
            # Never cancel a flush mid-write: the batch it holds would be lost.
            job.flush_stop.set()
            with contextlib.suppress(Exception):
                await flusher

        try:
            try:
                outcome = await loop.run_in_executor(
                    self.executor,
                    lambda: self._analyze(job, source, container, loop),
                )
            except Cancelled:
                if job.cache_hit is None:
                    raise
                await stop_flusher()
                await self._finish_cached(job, job.cache_hit)
                return
            await stop_flusher()
            await self._complete(
                job,
                outcome.results,
                timings=outcome.timings,
                media={**media_dict(outcome.info), **(job.media_extra() if job.media_extra else {})},
                truncated=outcome.truncated,
                early_stop=outcome.early_stop,
            )
        except (UnmaskError, Cancelled, Exception) as exc:
            await stop_flusher()
            await self._fail(job, exc)
        finally:
            job.opened.set()
            job.done.set()
            job.close_subscribers()
            if cleanup is not None:
                cleanup()
            loop.call_later(FINISHED_JOB_TTL_S, self.jobs.pop, job.id, None)

    async def _complete(
        self,
        job: Job,
        results: list[FrameResult],
        *,
        timings: dict[str, float],
        media: dict[str, Any],
        truncated: bool = False,
        early_stop: dict[str, Any] | None = None,
    ) -> None:
        """Wait for purification, then aggregate, index in the cache, store and announce the verdict."""
        if job.background:
            await asyncio.gather(*job.background, return_exceptions=True)
        await self._flush(job)
        purify_s = 0.0
        self._launch_purify(job)
        if job.purify_tasks:
            t0 = time.perf_counter()
            job.status = CheckStatus.PURIFYING
            job.publish(
                "progress",
                {
                    "status": job.status,
                    "frames": len(job.results),
                    "suspicious": sum(1 for r in results if r.purify_status is not None or r.crops),
                },
            )
            await retry_db(lambda: repo.update_check(self.sessions, job.id, status=CheckStatus.PURIFYING))
            await asyncio.gather(*job.purify_tasks, return_exceptions=True)
            purify_s = time.perf_counter() - t0
        verdict = aggregate(
            results,
            self.runtime.detector.card,
            timings={**timings, "purify": purify_s, "first_frame": job.first_frame_s or 0.0},
            media=media,
            truncated=truncated,
            tamper_threshold=self.runtime.tamper_threshold,
            early_stop=early_stop,
        )
        verdict["check_id"] = job.id
        verdict["keys"] = [] if _unchecked(verdict) else await self._store_keys(job, job.id, results)
        await self._save_thumbnails(job, results)
        await retry_db(lambda: repo.finish_check(self.sessions, job.id, verdict), what=f"check {job.id}")
        job.verdict = verdict
        job.status = CheckStatus.DONE
        job.publish("verdict", verdict)
        self.metrics.check_finished("done", verdict["label"])

    # ------------------------------------------------------------------ frames sent by a client
    def start_frames(self, check_id: str, request_id: str | None = None) -> Job:
        """Open a check that receives captured frames (``add_frames``) instead of a video."""
        job = Job(id=check_id, status=CheckStatus.RECEIVING, frames_mode=True, request_id=request_id)
        self.jobs[check_id] = job
        job.opened.set()
        job.last_activity = time.monotonic()
        job.publish("progress", {"status": CheckStatus.RECEIVING, "frames": 0})
        self.metrics.check_started("frames")
        job.task = asyncio.create_task(self._frames_run(job), name=f"frames-{check_id}")
        return job

    async def add_frames(self, job: Job, items: list[CapturedFrame], *, final: bool) -> list[FrameResult]:
        """Score client-captured frames on the executor and publish them; returns their results."""
        if job.done.is_set() or job.frames_final.is_set():
            raise Conflict(f"check {job.id} no longer accepts frames (it is {job.status})")
        if len(job.results) + len(items) > self.settings.max_sampled_frames:
            raise MediaLimitExceeded(
                f"a check takes at most {self.settings.max_sampled_frames} frames",
                limit="max_sampled_frames",
            )
        loop = asyncio.get_running_loop()
        start = job.next_index
        job.next_index += len(items)
        t0 = time.perf_counter()
        job.inflight += 1
        try:
            results = await loop.run_in_executor(
                self.executor, self._score_images, start, items, job.thumb_picker
            )
        finally:
            job.inflight -= 1
            job.last_activity = time.monotonic()
        job.detect_s += time.perf_counter() - t0
        for result in results:
            self._on_frame(job, result)
        await self._flush(job)
        if final or job.cache_hit is not None:
            job.frames_final.set()
        return results

    def _score_images(
        self, start: int, items: list[CapturedFrame], picker: ThumbnailPicker
    ) -> list[FrameResult]:
        rt = self.runtime
        faces = rt.faces()
        # The tamper check runs only on crops inside a lossless patch: the capture's JPEG hides
        # the perturbation from it (ROBUSTNESS.md, "Frames the extension captures").
        with rt.check():
            results = [
                score_frame(
                    start + i,
                    item.t,
                    item.image,
                    faces,
                    rt.detector,
                    tamper=rt.tamper,
                    pixel_model=rt.pixel_model,
                    logits_fn=rt.logits_fn(),
                    pixel_fn=rt.pixel_fn(),
                    tamper_on=functools.partial(
                        covers_crops, item.lossless, shape=item.image.shape, margin=CROP_MARGIN
                    ),
                )
                for i, item in enumerate(items)
            ]
        for result, item in zip(results, items, strict=True):
            picker.take(result, item.image)
        return results

    async def _frames_run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not job.frames_final.is_set():
                idle = time.monotonic() - job.last_activity
                if idle >= self.settings.frames_idle_timeout_s and job.inflight == 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        job.frames_final.wait(), self.settings.frames_idle_timeout_s - idle
                    )
            job.status = CheckStatus.RUNNING
            if job.cache_hit is not None:
                await self._finish_cached(job, job.cache_hit)
            else:
                results = sorted(job.results, key=lambda r: r.t)
                await self._complete(
                    job,
                    results,
                    timings={
                        "decode": 0.0,
                        "detect": job.detect_s,
                        "total": time.perf_counter() - job.started,
                    },
                    media={"container": "frames", "frames_received": len(results)},
                )
        except (UnmaskError, Exception) as exc:
            await self._fail(job, exc)
        finally:
            job.done.set()
            job.close_subscribers()
            loop.call_later(FINISHED_JOB_TTL_S, self.jobs.pop, job.id, None)

    def _analyze(
        self, job: Job, source: BinaryIO | str, container: str | None, loop: asyncio.AbstractEventLoop
    ):
        """Executor-thread body: report each step back to the loop thread."""
        loop.call_soon_threadsafe(self._on_running, job)
        return analyze_video(
            source,
            self.runtime,
            rate=self.settings.sample_rate,
            limits=self.limits,
            container=container,
            on_open=lambda info: loop.call_soon_threadsafe(self._on_open, job, info),
            on_frame=lambda r: loop.call_soon_threadsafe(self._on_frame, job, r),
            cancelled=job.stop.is_set,
            early=None
            if job.full or not self.settings.early_verdict
            else SequentialTest(threshold=self.runtime.detector.card.threshold),
            sandbox=self.settings.decode_sandbox,
        )

    @staticmethod
    def _spawn(job: Job, coro) -> None:  # type: ignore[no-untyped-def]
        # Keep a reference: the loop only holds weak references to tasks.
        task = asyncio.ensure_future(coro)
        job.background.add(task)
        task.add_done_callback(job.background.discard)

    def _on_running(self, job: Job) -> None:
        job.status = CheckStatus.RUNNING
        job.publish("progress", {"status": CheckStatus.RUNNING, "frames": 0})
        started_at = datetime.now(UTC)
        self._spawn(
            job,
            retry_db(
                lambda: repo.update_check(
                    self.sessions, job.id, status=CheckStatus.RUNNING, started_at=started_at
                )
            ),
        )

    def _on_open(self, job: Job, info: MediaInfo) -> None:
        job.info = info
        job.opened.set()
        job.publish("progress", {"status": job.status, "frames": 0, "media": media_dict(info)})
        media = media_dict(info)
        self._spawn(job, retry_db(lambda: repo.update_check(self.sessions, job.id, media=media)))

    def _on_frame(self, job: Job, result: FrameResult) -> None:
        if job.first_frame_s is None:
            job.first_frame_s = time.perf_counter() - job.started
        job.results.append(result)
        job.thumbnails.extend(result.thumbnails)
        result.thumbnails = []
        self.metrics.frames()
        if result.crops:
            job.purify_queue.append(result)
            if job.purify_timer is None:
                loop = asyncio.get_running_loop()
                job.purify_timer = loop.call_later(PURIFY_BATCH_WAIT_S, self._launch_purify, job)
        if len(job.results) == CACHE_PROBE_FRAMES:
            self._spawn(job, self._probe_cache(job))
        job.pending_frames.append(result)
        job.publish("frame", result.to_event())
        frames = sum(1 for e in job.events if e[1] == "frame")
        progress: dict[str, Any] = {"status": job.status, "frames": frames, "t": round(result.t, 3)}
        if job.info is not None and job.info.duration_s:
            progress["fraction"] = round(min(1.0, result.t / job.info.duration_s), 4)
        job.publish("progress", progress)

    async def _save_thumbnails(self, job: Job, results: list[FrameResult]) -> None:
        """Store the report page's thumbnails: face frames, and original vs purified crops."""
        items = list(job.thumbnails)
        for r in results:
            if r.purified_crop is not None:
                items.append(crop_thumbnail(r.index, r.t, r.purified_crop, purified=True))
                r.purified_crop = None
        job.thumbnails = []
        try:
            await save_thumbnails(self.sessions, job.id, items)
        except Exception:  # thumbnails illustrate a verdict; they never block it
            _LOGGER.exception("check %s: could not store thumbnails", job.id)

    def _launch_purify(self, job: Job) -> None:
        """Send the suspicious frames gathered so far as one batch."""
        if job.purify_timer is not None:
            job.purify_timer.cancel()
            job.purify_timer = None
        frames, job.purify_queue = job.purify_queue, []
        if frames:
            job.purify_tasks.append(asyncio.ensure_future(self._purify_batch(job, frames)))

    async def _purify_batch(self, job: Job, frames: list[FrameResult]) -> None:
        """Purify one batch of suspicious frames and record each frame's purified score."""
        try:
            if self.purifier is None:
                for f in frames:
                    f.crops = None
                    f.purify_status, f.purify_error = (
                        "failed",
                        "purification is off on this server (PURIFY=false)",
                    )
            else:
                items = await self.purifier.submit(job.id, frames, job.request_id)
                await self.purifier.collect(job.id, items, job.request_id)
        except Exception as exc:  # the check must still end with a verdict
            _LOGGER.exception("check %s: purification batch failed", job.id)
            for f in frames:
                if f.purify_status != "done":
                    f.purify_status, f.purify_error = "failed", f"purification error ({type(exc).__name__})"
        await self._flush(job)
        for f in frames:
            await retry_db(
                lambda f=f: repo.update_frame(
                    self.sessions,
                    job.id,
                    f.index,
                    purified_score=f.purified_score,
                    purify_status=f.purify_status,
                )
            )
            job.publish(
                "purified",
                {
                    "index": f.index,
                    "t": round(f.t, 3),
                    "purified_score": f.purified_score,
                    "status": f.purify_status,
                    "error": f.purify_error,
                },
            )

    async def _probe_cache(self, job: Job) -> None:
        """Stop the analysis early when a near-duplicate of this video has a verdict."""
        hashes = [r.phash for r in job.results if r.phash is not None]
        try:
            hit = await self.lookup_frames(hashes)
        except Exception:  # a cache failure must never fail the check itself
            _LOGGER.exception("check %s: near-duplicate look-up failed", job.id)
            return
        if hit is not None and hit.check_id != job.id:
            job.cache_hit = hit
            job.stop.set()

    async def _store_keys(self, job: Job, target: str, results: list[FrameResult]) -> list[dict[str, Any]]:
        """Index the verdict of ``target`` under this job's keys and frame hashes."""
        keys = job.keys() if job.keys is not None else []
        hashes = [(r.index, r.t, r.phash) for r in results if r.phash is not None] if target == job.id else []
        try:
            return await retry_db(
                lambda: cache.store(self.sessions, target, self.model_ref, keys, hashes, self.cache_ttl)
            )
        except Exception:  # the verdict matters more than its cache entry
            _LOGGER.exception("check %s: could not store cache keys", job.id)
            return []

    async def _finish_cached(self, job: Job, hit: cache.CacheHit) -> None:
        """End the check with a near-duplicate's verdict, and index this copy's keys to it."""
        if job.background:
            await asyncio.gather(*job.background, return_exceptions=True)
        await self._flush(job)
        verdict = hit.as_verdict()
        verdict["check_id"] = job.id
        verdict["keys"] = await self._store_keys(job, hit.check_id, job.results)
        await retry_db(lambda: repo.finish_check(self.sessions, job.id, verdict), what=f"check {job.id}")
        job.verdict = verdict
        job.status = CheckStatus.DONE
        job.publish("verdict", verdict)
        self.metrics.check_finished("done", verdict["label"])

    async def _flush(self, job: Job) -> None:
        batch, job.pending_frames = job.pending_frames, []
        if batch:
            rows = [r.to_row() for r in batch]
            await retry_db(lambda: repo.add_frames(self.sessions, job.id, rows), what=f"check {job.id}")

    async def _flush_loop(self, job: Job) -> None:
        while not job.flush_stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.flush_stop.wait(), FRAME_FLUSH_INTERVAL_S)
            await self._flush(job)

    async def _fail(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, UnmaskError):
            code, message = exc.code, exc.message
            job.error = exc
        elif isinstance(exc, Cancelled) and job.superseded_by is not None:
            code = "duplicate"
            message = f"the same video was already being checked; follow check {job.superseded_by}"
            job.error = UnmaskError(message)
            job.error.code = code
        elif isinstance(exc, Cancelled | asyncio.CancelledError):
            code, message = (
                "interrupted",
                "the check was interrupted before it finished (server shutting down)",
            )
            job.error = UnmaskError(message)
            job.error.code = code
        else:
            _LOGGER.exception("check %s failed unexpectedly", job.id)
            code, message = "internal", f"internal error while analysing the video ({type(exc).__name__})"
            job.error = UnmaskError(message)
        job.status = CheckStatus.FAILED
        # Pending status writes must land before the failure, or they would overwrite it.
        if job.background:
            await asyncio.gather(*job.background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._flush(job)
        try:
            await retry_db(
                lambda: repo.fail_check(self.sessions, job.id, code, message), what=f"check {job.id}"
            )
        except Exception:  # the database itself may be what failed; the log keeps the reason
            _LOGGER.exception("check %s: could not record the failure", job.id)
        job.publish("error", {"code": code, "message": message})
        self.metrics.check_finished("failed", code)

    async def subscribe(
        self, check_id: str, after: int = 0, keepalive_s: float | None = None
    ) -> AsyncIterator[Event | None]:
        """Every event of a check after sequence number ``after``, live while it runs.

        Yields None when ``keepalive_s`` passes without an event, so the caller can ping.
        """
        job = self.jobs.get(check_id)
        if job is None:
            async for event in self._replay_from_db(check_id, after):
                yield event
            return
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        backlog = [e for e in job.events if e[0] > after]
        finished = job.done.is_set()
        if not finished:
            job.subscribers.add(queue)
        try:
            for event in backlog:
                yield event
            if finished:
                return
            last = backlog[-1][0] if backlog else after
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield None
                    continue
                if event is None:
                    return
                if event[0] > last:
                    yield event
        finally:
            job.subscribers.discard(queue)

    async def _replay_from_db(self, check_id: str, after: int) -> AsyncIterator[Event]:
        check = await repo.get_check(self.sessions, check_id, with_frames=True)
        if check is None:
            raise NotFound(f"no check with id {check_id!r}")
        events: list[tuple[str, dict[str, Any]]] = [("progress", {"status": check.status})]
        for f in check.frames:
            events.append(
                (
                    "frame",
                    FrameResult(
                        index=f.index,
                        t=f.t,
                        score=f.score,
                        boxes=f.boxes,
                        tamper=f.tamper,
                        purified_score=f.purified_score,
                    ).to_event(),
                )
            )
        if check.verdict is not None:
            events.append(("verdict", check.verdict.payload))
        elif check.status == CheckStatus.FAILED:
            events.append(("error", {"code": check.error_code, "message": check.error_message}))
        for seq, (name, data) in enumerate(events, start=1):
            if seq > after:
                yield (seq, name, data)

    async def close(self) -> None:
        """Stop every running job and record it as interrupted."""
        for task in list(self.resuming):  # a URL not yet re-opened stays queued for the next start
            task.cancel()
        await asyncio.gather(*self.resuming, return_exceptions=True)
        for job in list(self.jobs.values()):
            job.stop.set()
            job.frames_final.set()  # frames checks end now with the frames they have
            if job.pump is not None and not job.pump.done():
                job.pump.cancel()
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
