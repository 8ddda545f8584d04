"""Token buckets and running-check counts, on a fake clock."""

from __future__ import annotations

import pytest

from server import ratelimit
from server.ratelimit import ConcurrencyLimiter, RateLimiter


def _limiter(rate: float, burst: int) -> tuple[RateLimiter, list[float]]:
    now = [0.0]
    return RateLimiter(rate, burst, clock=lambda: now[0]), now


def test_burst_then_one_request_per_refill_interval() -> None:
    limiter, now = _limiter(rate=60, burst=3)
    assert [limiter.check("a") for _ in range(3)] == [None, None, None]
    assert limiter.check("a") == 1
    now[0] += 0.5
    assert limiter.check("a") == 1  # half a token: still refused, retry in ~0.5 s rounds up to 1
    now[0] += 0.5
    assert limiter.check("a") is None


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    limiter, _ = _limiter(rate=6, burst=1)  # one request per 10 s
    assert limiter.check("a") is None
    assert limiter.check("a") == 10


def test_keys_are_independent_and_may_have_their_own_rate() -> None:
    limiter, now = _limiter(rate=60, burst=1)
    assert limiter.check("a") is None
    assert limiter.check("b") is None
    assert limiter.check("a") == 1
    assert limiter.check("slow", rate_per_minute=1) is None
    assert limiter.check("slow", rate_per_minute=1) == 60
    now[0] += 60
    assert limiter.check("slow", rate_per_minute=1) is None


def test_peek_spends_nothing() -> None:
    limiter, _ = _limiter(rate=60, burst=1)
    assert limiter.peek("a") is None
    assert limiter.check("a") is None
    assert limiter.peek("a") == 1
    assert limiter.peek("a") == 1


def test_idle_buckets_are_forgotten_when_the_table_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 4)
    limiter, now = _limiter(rate=60, burst=2)
    for key in "abcd":
        limiter.check(key)
    now[0] += 10  # all refilled
    limiter.check("e")
    assert len(limiter) == 1
    for key in "fghij":
        limiter.check(key)  # all active: the oldest half goes, the table stays bounded
    assert len(limiter) <= 4


def test_concurrency_limiter_counts_slots_per_key() -> None:
    running = ConcurrencyLimiter()
    assert running.acquire("a", 2) and running.acquire("a", 2)
    assert not running.acquire("a", 2)
    assert running.acquire("b", 2)
    running.release("a")
    assert running.running("a") == 1
    assert running.acquire("a", 2)
    for _ in range(3):
        running.release("a")
    assert running.running("a") == 0
