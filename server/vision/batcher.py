"""One inference queue shared by every running check: crops are batched across checks.

Each check scores a frame's 1–8 face crops at a time; alone, such tiny batches leave the
GPU (and the CPU's vector units) mostly idle. Requests from all checks' threads go to one
queue; a single inference thread takes what has arrived, waits at most ``max_wait_ms`` for
more, runs one forward pass for up to ``max_batch`` crops, and hands each caller its rows.
Callers that register (``caller()``, one per running check) let the queue flush as soon as each
of them has a request waiting: no one else can add to the batch, so a check running alone never
waits for company, and several never wait longer than the slowest of them needs to arrive.
A request is either uint8 face crops (``logits``) or [0, 1] pixel tensors at the detector's input
size (``pixel_logits``: a frame's crops with the tamper check's copies), merged into one forward.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

import numpy as np
import torch

from server.vision.detector import Detector

# What one caller hands in: face crops (uint8 RGB arrays, any size) or [0, 1] pixels (N, 3, H, W).
Payload = Sequence[np.ndarray] | torch.Tensor

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
        self._queue: queue.Queue[tuple[Payload, Future[np.ndarray]] | None] = queue.Queue()
        self.batches = 0
        self.crops = 0
        self._callers = 0  # registered callers (running checks); 0: unknown, wait the full window
        self._callers_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="inference-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def caller(self) -> Iterator[None]:
        """Register one caller that submits one request at a time (a check) while inside."""
        with self._callers_lock:
            self._callers += 1
        try:
            yield
        finally:
            with self._callers_lock:
                self._callers -= 1

    def _everyone_waiting(self, pending: int) -> bool:
        callers = self._callers
        return 0 < callers <= pending

    def logits(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 2) logits for ``crops``, computed in a shared batch (blocks the calling thread)."""
        return self._submit(crops)

    def pixel_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 2) logits of [0, 1] pixels (N, 3, H, W) at the input size, in a shared batch."""
        return torch.from_numpy(self._submit(pixels.detach()))

    def _submit(self, payload: Payload) -> np.ndarray:
        if len(payload) == 0:
            return np.zeros((0, 2), np.float32)
        future: Future[np.ndarray] = Future()
        self._queue.put((payload, future))
        return future.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            count = len(first[0])
            deadline = time.monotonic() + self.max_wait_s
            while count < self.max_batch and not self._everyone_waiting(len(pending)):
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

    def _flush(self, pending: list[tuple[Payload, Future[np.ndarray]]]) -> None:
        det = self.detector
        try:
            inputs = [
                det.normalize(p) if isinstance(p, torch.Tensor) else det.preprocess(p) for p, _ in pending
            ]
            logits = det.run(torch.cat(inputs))
        except Exception as exc:  # every waiting caller gets the error, none hangs
            for _, future in pending:
                future.set_exception(exc)
            return
        self.batches += 1
        self.crops += len(logits)
        start = 0
        for batch, future in pending:
            future.set_result(logits[start : start + len(batch)])
            start += len(batch)

    def close(self) -> None:
        """Finish queued requests, then stop the inference thread."""
        self._queue.put(None)
        self._thread.join(timeout=10)
