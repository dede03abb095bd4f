"""Limits per caller, each replica holding its share: rates and concurrent requests."""

from __future__ import annotations

import pytest

from m8.api.limits import ConcurrencyLimit, Limits, RateLimit
from m8.api.problems import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_gets_its_burst_then_one_request_per_refill() -> None:
    clock = Clock()
    limit = RateLimit("uploads", 60, clock)

    for _ in range(60):
        limit.take("alice")
    with pytest.raises(TooManyRequests) as refused:
        limit.take("alice")
    clock.now += 1.0  # 60 a minute: one more a second
    limit.take("alice")

    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "1"}
    assert "'alice'" in refused.value.detail


def test_retry_after_says_how_long_until_the_next_request_is_allowed() -> None:
    clock = Clock()
    limit = RateLimit("upload keys", 2, clock)  # one every 30 s

    limit.take("bob")
    limit.take("bob")
    clock.now += 10
    with pytest.raises(TooManyRequests) as refused:
        limit.take("bob")

    assert refused.value.headers == {"Retry-After": "20"}


def test_callers_have_separate_limits() -> None:
    limit = RateLimit("uploads", 1, Clock())

    limit.take("alice")
    limit.take("bob")
    with pytest.raises(TooManyRequests):
        limit.take("alice")


def test_each_replica_enforces_its_share_of_the_total() -> None:
    limits = Limits.share_of(4, upload_keys_per_minute=60, uploads_per_minute=120, long_polls=8)

    assert limits.upload_keys.capacity == 15
    assert limits.uploads.capacity == 30
    assert limits.long_polls.limit == 2


def test_a_share_is_never_less_than_one() -> None:
    limits = Limits.share_of(10, upload_keys_per_minute=3, uploads_per_minute=3, long_polls=3)

    assert limits.upload_keys.capacity == 1
    assert limits.long_polls.limit == 1


def test_a_slot_is_given_back_when_the_request_ends_even_by_an_error() -> None:
    limit = ConcurrencyLimit("waits", 2)

    with limit.hold("alice"), limit.hold("alice"):
        with pytest.raises(TooManyRequests) as refused, limit.hold("alice"):
            pass
        with limit.hold("bob"):
            assert limit.running("bob") == 1
    with pytest.raises(RuntimeError), limit.hold("alice"):
        raise RuntimeError("the request failed")

    assert refused.value.headers == {"Retry-After": "1"}
    assert limit.running("alice") == 0


def test_buckets_of_callers_back_to_full_are_dropped_when_there_are_many() -> None:
    clock = Clock()
    limit = RateLimit("uploads", 60, clock)
    for n in range(10_000):
        limit.take(f"caller-{n}")
    clock.now += 60  # all full again

    limit.take("one-more")

    assert len(limit._buckets) == 1
