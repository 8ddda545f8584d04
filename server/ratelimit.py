"""In-process request budgets: a token bucket per key and a count of running checks per key.

State lives in one server process; N servers behind a proxy each allow the full budget, which
is the usual trade (no shared store on the request path) and is documented for operators.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# Buckets kept before idle (full) ones are dropped: bounds memory when many client IPs appear.
MAX_BUCKETS = 10_000


class RateLimiter:
    """Token buckets: ``burst`` requests at once, then ``rate_per_minute`` spread over the minute."""

    def __init__(
        self, rate_per_minute: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError("rate_per_minute must be > 0 and burst >= 1")
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self._clock = clock
        # key -> (tokens left, time of last refill, rate per second of this key)
        self._buckets: dict[str, tuple[float, float, float]] = {}

    def _refilled(self, key: str, rate_per_minute: float | None) -> tuple[float, float, float]:
        now = self._clock()
        per_s = (rate_per_minute or self.rate_per_minute) / 60.0
        tokens, last, _ = self._buckets.get(key, (float(self.burst), now, per_s))
        return min(float(self.burst), tokens + (now - last) * per_s), now, per_s

    def check(self, key: str, *, rate_per_minute: float | None = None) -> int | None:
        """Spend one request of ``key``: None when allowed, else whole seconds until one is."""
        tokens, now, per_s = self._refilled(key, rate_per_minute)
        if tokens >= 1.0:
            if len(self._buckets) >= MAX_BUCKETS and key not in self._buckets:
                self._prune()
            self._buckets[key] = (tokens - 1.0, now, per_s)
            return None
        self._buckets[key] = (tokens, now, per_s)
        return max(1, math.ceil((1.0 - tokens) / per_s))

    def peek(self, key: str) -> int | None:
        """Like ``check`` but spends nothing: None when a request would be allowed now."""
        if key not in self._buckets:
            return None
        tokens, _, per_s = self._refilled(key, self._buckets[key][2] * 60.0)
        return None if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / per_s))

    def _prune(self) -> None:
        # A bucket that has refilled completely holds no information: forgetting it is exact.
        now = self._clock()
        full = [k for k, (t, last, r) in self._buckets.items() if t + (now - last) * r >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:
            # Still full of active clients: drop the oldest half rather than grow without bound.
            for key in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: MAX_BUCKETS // 2]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class ConcurrencyLimiter:
    """How many checks each key has running; ``acquire`` refuses beyond the key's cap."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}

    def acquire(self, key: str, cap: int) -> bool:
        """Take a slot for ``key`` when fewer than ``cap`` are held."""
        held = self._running.get(key, 0)
        if held >= cap:
            return False
        self._running[key] = held + 1
        return True

    def release(self, key: str) -> None:
        """Give back one slot of ``key``."""
        held = self._running.get(key, 0) - 1
        if held > 0:
            self._running[key] = held
        else:
            self._running.pop(key, None)

    def running(self, key: str) -> int:
        """Slots ``key`` holds now."""
        return self._running.get(key, 0)
