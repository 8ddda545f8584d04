"""The server side of purification: store suspicious crops, queue Celery tasks, collect results.

No aiohttp here: the job manager calls it. Crops travel through the database (content-addressed
``crops`` table), never inside broker messages; results come back through the
``purifications`` table, keyed by crop hash + purifier version + detector version, so a
redelivered or repeated task is a no-op and two checks of the same frames share one result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy.ext.asyncio import async_sessionmaker

from server import limits
from server.analysis.frames import FrameResult
from server.metrics import Metrics
from server.robust.purification import purify_versions
from server.robust.purify_store import decode_png, get_results, put_crops, result_key
from server.settings import Settings
from server.vision.card import ModelCard

_LOGGER = logging.getLogger(__name__)

# Results are read from the database this often while a check waits for them.
POLL_INTERVAL_S = 0.25

# Queueing a task must not hang a check when the broker is down (kombu retries 3 times first).
SEND_TIMEOUT_S = 15.0

# Beyond the worker's own hard time limit, this long is allowed for queueing and start-up
# before a task is re-sent once (the embedded broker loses a task whose whole worker died).
RESEND_SLACK_S = 30.0


@dataclass
class Submitted:
    """One frame's crops as queued: the result key of each face crop."""

    frame: FrameResult
    keys: list[str]
    shas: list[str]
    sent_at: float = field(default_factory=time.monotonic)
    resent: bool = False


class PurifyDispatcher:
    """Sends suspicious frames' face crops to the workers and writes their purified scores back."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker,
        celery: Celery | None,
        executor: Executor,
        card: ModelCard,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sessions = sessions
        self.celery = celery
        self.executor = executor
        self.purifier_version, self.detector_ref = purify_versions(settings, card)

    @property
    def deadline_s(self) -> float:
        """How long one batch may take before its frames are given up on."""
        return 2 * (self.settings.purify_time_limit_s + RESEND_SLACK_S)

    async def _send(self, check_id: str, shas: list[str], request_id: str | None) -> None:
        from worker.celery_app import send_purify_frames

        if self.celery is None:
            raise RuntimeError("no purification queue is configured")
        loop = asyncio.get_running_loop()
        for start in range(0, len(shas), limits.PURIFY_MAX_CROPS_PER_TASK):
            chunk = shas[start : start + limits.PURIFY_MAX_CROPS_PER_TASK]
            await asyncio.wait_for(
                loop.run_in_executor(
                    self.executor,
                    lambda chunk=chunk: send_purify_frames(
                        self.celery,
                        check_id=check_id,
                        crop_shas=chunk,
                        purifier_version=self.purifier_version,
                        detector_ref=self.detector_ref,
                        request_id=request_id,
                    ),
                ),
                SEND_TIMEOUT_S,
            )

    async def submit(
        self, check_id: str, frames: Sequence[FrameResult], request_id: str | None
    ) -> list[Submitted]:
        """Store the frames' crops and queue them; the frames' crops are released."""
        submitted: list[Submitted] = []
        all_shas: list[str] = []
        for frame in frames:
            shas = await put_crops(self.sessions, frame.crops or [])
            frame.crops = None  # the database holds them now; keep memory flat
            keys = [result_key(sha, self.purifier_version, self.detector_ref) for sha in shas]
            submitted.append(Submitted(frame=frame, keys=keys, shas=shas))
            all_shas.extend(shas)
        try:
            await self._send(check_id, list(dict.fromkeys(all_shas)), request_id)
        except Exception as exc:  # broker down or misconfigured: the frames fail, the check goes on
            reason = f"purification queue unavailable ({type(exc).__name__}: {exc})"[:300]
            _LOGGER.error("check %s: %s", check_id, reason)
            for item in submitted:
                item.frame.purify_status = "failed"
                item.frame.purify_error = reason
        return submitted

    async def collect(self, check_id: str, items: list[Submitted], request_id: str | None) -> None:
        """Wait for every submitted frame's results (re-sending once), then set them on the frames."""
        waiting = [i for i in items if i.frame.purify_status != "failed"]
        while waiting:
            results = await get_results(self.sessions, [k for i in waiting for k in i.keys])
            still: list[Submitted] = []
            for item in waiting:
                rows = [results.get(k) for k in item.keys]
                if all(r is not None for r in rows):
                    if self.metrics is not None:
                        for r in rows:
                            self.metrics.purified(r.seconds or 0.0, r.status)  # type: ignore[union-attr]
                    done = [
                        r.purified_score for r in rows if r.status == "done" and r.purified_score is not None
                    ]
                    if done:
                        item.frame.purified_score = max(done)
                        item.frame.purify_status = "done"
                        png = next((r.purified_png for r in rows if r.purified_png), None)
                        if png is not None:
                            item.frame.purified_crop = decode_png(png)
                    else:
                        item.frame.purify_status = "failed"
                        item.frame.purify_error = next(
                            (r.error for r in rows if r.error), "purification failed"
                        )
                    continue
                age = time.monotonic() - item.sent_at
                if age > self.deadline_s:
                    item.frame.purify_status = "failed"
                    item.frame.purify_error = f"purification did not answer within {self.deadline_s:.0f} s"
                    continue
                if not item.resent and age > self.settings.purify_time_limit_s + RESEND_SLACK_S:
                    item.resent = True
                    try:
                        await self._send(check_id, item.shas, request_id)
                    except Exception:
                        _LOGGER.exception("check %s: re-sending purification failed", check_id)
                still.append(item)
            waiting = still
            if waiting:
                await asyncio.sleep(POLL_INTERVAL_S)
