"""One inference queue shared by every running check: crops are batched across checks.

Each check scores a frame's 1–8 face crops at a time; alone, such tiny batches leave the
GPU (and the CPU's vector units) mostly idle. Requests from all checks' threads go to one
queue; a single inference thread takes what has arrived, waits at most ``max_wait_ms`` for
more, runs one forward pass for up to ``max_batch`` crops, and hands each caller its rows.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from server.vision.detector import Detector

# Flush as soon as this many crops are waiting (the detector's own largest batch).
MAX_BATCH = 64

# ...or once the oldest request has waited this long: a few ms costs nothing next to the
# ~50–300 ms a frame takes to decode and scan for faces, and lets concurrent checks meet.
MAX_WAIT_MS = 4.0


class InferenceBatcher:
    """Thread-safe ``logits(crops)`` that batches concurrent callers into shared forward passes."""

    def __init__(
        self, detector: Detector, max_batch: int = MAX_BATCH, max_wait_ms: float = MAX_WAIT_MS
    ) -> None:
        self.detector = detector
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: queue.Queue[tuple[Sequence[np.ndarray], Future[np.ndarray]] | None] = queue.Queue()
        self.batches = 0
        self.crops = 0
        self._thread = threading.Thread(target=self._run, name="inference-batcher", daemon=True)
        self._thread.start()

    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 2) logits for ``crops``, computed in a shared batch (blocks the calling thread)."""
        if len(crops) == 0:
            return np.zeros((0, 2), np.float32)
        future: Future[np.ndarray] = Future()
        self._queue.put((crops, future))
        return future.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            count = len(first[0])
            deadline = time.monotonic() + self.max_wait_s
            while count < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                pending.append(item)
                count += len(item[0])
            self._flush(pending)

    def _flush(self, pending: list[tuple[Sequence[np.ndarray], Future[np.ndarray]]]) -> None:
        crops = [c for batch, _ in pending for c in batch]
        try:
            logits = self.detector.logits(crops)
        except Exception as exc:  # every waiting caller gets the error, none hangs
            for _, future in pending:
                future.set_exception(exc)
            return
        self.batches += 1
        self.crops += len(crops)
        start = 0
        for batch, future in pending:
            future.set_result(logits[start : start + len(batch)])
            start += len(batch)

    def close(self) -> None:
        """Finish queued requests, then stop the inference thread."""
        self._queue.put(None)
        self._thread.join(timeout=10)
