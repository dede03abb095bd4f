"""Limits per caller that hold across API replicas without touching the database.

Each replica enforces its share of a configured total (total / M8_API_REPLICAS) in its own
memory: no database write, no coordination, and a caller whose requests the load balancer
spreads over the replicas gets the total at most. The cost is precision: a caller pinned
to one replica gets only that replica's share, and a replica's restart forgets its counts.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from m8.api.problems import TooManyRequests

# Buckets of callers that are back to full are dropped once there are this many, so the
# memory a limiter holds stays bounded by the callers active in the last minute or so.
_PRUNE_AT = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimit:
    """A token bucket per caller: `per_minute` requests in a burst, refilled evenly."""

    def __init__(
        self, what: str, per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.capacity = max(1.0, per_minute)
        self.per_second = per_minute / 60
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, caller: str) -> None:
        """Counts one request of `caller`; TooManyRequests (with Retry-After) past the limit."""
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[caller] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        if bucket.tokens < 1:
            # Rounded first: float error must not add a whole second.
            wait = max(1, math.ceil(round((1 - bucket.tokens) / self.per_second, 6)))
            raise TooManyRequests(
                f"too many {self.what} for {caller!r}: at most {self.capacity:g} a minute here; "
                f"try again in {wait} s",
                retry_after=wait,
            )
        bucket.tokens -= 1

    def _prune(self, now: float) -> None:
        for caller, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self.per_second >= self.capacity:
                del self._buckets[caller]


class ConcurrencyLimit:
    """At most `limit` requests of one caller at a time (long-polls hold a worker each)."""

    RETRY_AFTER = 1

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        self._running: dict[str, int] = {}

    def running(self, caller: str) -> int:
        """How many requests of `caller` hold a slot now."""
        return self._running.get(caller, 0)

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        """One slot of `caller` while the block runs; TooManyRequests if none is free."""
        running = self._running.get(caller, 0)
        if running >= self.limit:
            raise TooManyRequests(
                f"{caller!r} has {running} {self.what} open here already, the most allowed; "
                "wait for one to end",
                retry_after=self.RETRY_AFTER,
            )
        self._running[caller] = running + 1
        try:
            yield
        finally:
            left = self._running[caller] - 1
            if left:
                self._running[caller] = left
            else:
                del self._running[caller]


@dataclass(frozen=True)
class Limits:
    """The API's limits per caller, each at this replica's share."""

    upload_keys: RateLimit
    uploads: RateLimit
    long_polls: ConcurrencyLimit

    @classmethod
    def share_of(
        cls,
        replicas: int,
        upload_keys_per_minute: int,
        uploads_per_minute: int,
        long_polls: int,
    ) -> Limits:
        """This replica's share of totals meant for `replicas` replicas together."""
        return cls(
            upload_keys=RateLimit("upload keys", upload_keys_per_minute / replicas),
            uploads=RateLimit("uploads", uploads_per_minute / replicas),
            long_polls=ConcurrencyLimit("waiting status requests", max(1, long_polls // replicas)),
        )
