"""The outbox: publishes recorded events to the broker, right after their commit.

Appending marks each event that goes to the bus (`DomainEvent.on_bus`) `published: false`
in the same write. The process that appended hands its committed events to `submit`, and
the relay's pusher publishes them at once, with publisher confirms, and marks those the
broker confirmed in one write. No poll stands between a commit and its message.

What a crash or an outage left unpublished, the backstop publishes: every
`backstop_interval` the replica that holds the service's lease (`outbox:<service>`)
publishes the events still unpublished after `grace`, so that it does not race the
pushers of live processes. A crash between publishing and marking republishes with the
same message id, which consumers absorb.

Each service publishes only the events it owns (`m8.messaging.permissions.publishes`)
with its own broker credentials, which allow those routing keys and no others. A
document that does not decode is set aside (see `EventRecorder.unpublished`) rather than
stopping the backstop in front of it.

Each backstop pass also notes what it left unpublished (`Backlog`): the relay lag that
the services export as `m8_outbox_unpublished_events` and
`m8_outbox_oldest_unpublished_age_seconds` (`BacklogCollector`). Only the replica that
holds the lease measures it; the others export nothing.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from m8.eventsourcing import EventRecorder, EventStoreUnavailable, StoredEvent
from m8.messaging import Broker
from m8.messaging.permissions import publishes

log = logging.getLogger(__name__)

LEASE_ID = "outbox"
# The service label of a relay of every event (tests and tools).
ALL_SERVICES = "all"


@dataclass(frozen=True)
class Backlog:
    """What one backstop pass left unpublished: how many events (counted up to the
    relay's batch) and when the oldest of them was made (None: none)."""

    service: str
    unpublished: int
    oldest: datetime | None

    def oldest_age(self, now: datetime) -> float:
        """Seconds since the oldest unpublished event was made (0 when there is none)."""
        return max((now - self.oldest).total_seconds(), 0.0) if self.oldest else 0.0


# The relays of this process, for the metrics (weak: a stopped relay drops out).
_RELAYS: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def backlogs() -> dict[str, Backlog]:
    """Per service, the backlog the live relays of this process measured at their last
    backstop pass (the largest, if several relays of one service run here, as in tests);
    relays that measured nothing (not holding the lease) are left out."""
    found: dict[str, Backlog] = {}
    for relay in list(_RELAYS):
        backlog = relay.backlog
        if backlog is None:
            continue
        known = found.get(backlog.service)
        if known is None or _size(backlog) > _size(known):
            found[backlog.service] = backlog
    return found


def _size(backlog: Backlog) -> tuple[int, float]:
    # More events first, then the older oldest one.
    return backlog.unpublished, -backlog.oldest.timestamp() if backlog.oldest else float("-inf")


def lease_id(service: str | None) -> str:
    """The lease of `service`'s relays (`outbox` for a relay of every event)."""
    return f"{LEASE_ID}:{service}" if service else LEASE_ID


class OutboxRelay:
    """Publishes the events of `service` (None: all): those this process appended as soon
    as they are submitted, and, while holding the lease, whatever is left behind."""

    def __init__(
        self,
        recorder: EventRecorder,
        broker: Broker,
        *,
        owner: str,
        service: str | None = None,
        batch: int = 200,
        backstop_interval: float = 2.0,
        grace: float = 10.0,
        lease_seconds: float = 10.0,
        confirm_timeout: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.recorder = recorder
        self.broker = broker
        self.owner = owner
        # None: every event (tests and tools that stand in for several services).
        self.service = service
        self.kinds = publishes(service) if service is not None else None
        self.lease_id = lease_id(service)
        self.batch = batch
        self.backstop_interval = backstop_interval
        # Longer than a push takes to be confirmed, so the backstop leaves live pushes be.
        self.grace = timedelta(seconds=grace)
        self.lease = timedelta(seconds=lease_seconds)
        self.confirm_timeout = confirm_timeout
        self.max_backoff = max_backoff
        self._lease_until: datetime | None = None
        self._submitted: list[StoredEvent] = []
        self._has_submitted = asyncio.Event()
        # What the last backstop pass left unpublished (None: this relay made no pass, or
        # another replica holds the lease and measures it).
        self.backlog: Backlog | None = None
        _RELAYS.add(self)

    def submit(self, events: Sequence[StoredEvent]) -> None:
        """Publishes these just-committed events soon (they are `Repository.on_append`)."""
        mine = [e for e in events if e.on_bus and self._owns(e)]
        if mine:
            self._submitted.extend(mine)
            self._has_submitted.set()

    def _owns(self, event: StoredEvent) -> bool:
        return self.kinds is None or any(kind.matches(event) for kind in self.kinds)

    async def run(self) -> None:
        """Pushes and backs up until cancelled; survives broker and database outages."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._push())
                group.create_task(self._backstop())
        finally:
            self.backlog = None  # a stopped relay measures nothing any more

    async def _push(self) -> None:
        while True:
            await self._has_submitted.wait()
            await self.push_submitted()

    async def push_submitted(self) -> int:
        """Publishes what was submitted (in batches); returns how many were confirmed.

        What the broker does not confirm is left to the backstop, which sends it after
        `grace`: a pusher that retried in place would hold up the events behind it.
        """
        confirmed = 0
        while self._submitted:
            events, self._submitted = self._submitted[: self.batch], self._submitted[self.batch :]
            if not self._submitted:
                self._has_submitted.clear()
            # Those older than `grace` the backstop sends (or sent): not twice.
            fresh_since = datetime.now(UTC) - self.grace
            events = [e for e in events if e.recorded_at >= fresh_since]
            if not events:
                continue
            try:
                confirmed += await self._publish(events)
            except (EventStoreUnavailable, OSError) as exc:
                log.warning("could not mark published events, the backstop resends: %s", exc)
            except Exception:
                # The pusher must go on; the backstop sends whatever this left unmarked.
                log.exception("pushing events failed unexpectedly; the backstop resends them")
        return confirmed

    async def _backstop(self) -> None:
        failures = 0
        while True:
            try:
                holding = await self._hold_lease()
                if not holding:
                    self.backlog = None  # the holder measures it
                more = (
                    holding
                    and await self.publish_pending(datetime.now(UTC) - self.grace) >= self.batch
                )
                failures = 0
            except (EventStoreUnavailable, OSError) as exc:
                more, failures = False, failures + 1
                log.warning("outbox backstop pass failed, retrying: %s", exc)
            except Exception:
                # Whatever it is, the backstop must go on: it is what recovers the rest.
                more, failures = False, failures + 1
                log.exception("outbox backstop pass failed unexpectedly, retrying")
            if more:
                continue
            pause = self.backstop_interval
            if failures:
                pause = min(self.backstop_interval * 2**failures, self.max_backoff)
            await asyncio.sleep(pause)

    async def publish_pending(self, before: datetime | None = None) -> int:
        """One backstop pass: publishes up to `batch` unpublished events (made before
        `before`, if given); returns how many were confirmed."""
        events = await self.recorder.unpublished(self.batch, self.kinds, before)
        left = await self._send(events) if events else []
        self.backlog = Backlog(
            self.service or ALL_SERVICES,
            len(left),
            min((e.recorded_at for e in left), default=None),
        )
        return len(events) - len(left)

    async def flush(self) -> None:
        """Publishes what this process submitted and has not published yet: at shutdown,
        so that none of it waits for the backstop (which sends the rest)."""
        await self.push_submitted()

    async def _publish(self, events: Sequence[StoredEvent]) -> int:
        return len(events) - len(await self._send(events))

    async def _send(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Publishes `events`, marks those confirmed; returns those left unpublished."""
        outcomes = await asyncio.gather(
            *(self.broker.publish_event(event, self.confirm_timeout) for event in events),
            return_exceptions=True,
        )
        confirmed = [e.event_id for e, outcome in zip(events, outcomes, strict=True) if not outcome]
        if confirmed:
            await self.recorder.mark_published(confirmed)
        if len(confirmed) < len(events):
            failure = next(o for o in outcomes if isinstance(o, BaseException))
            log.warning(
                "broker did not confirm %d of %d events: %s",
                len(events) - len(confirmed),
                len(events),
                f"{type(failure).__name__}: {failure}",
            )
        return [e for e, outcome in zip(events, outcomes, strict=True) if outcome]

    async def _hold_lease(self) -> bool:
        now = datetime.now(UTC)
        # Renewing at half time keeps lease writes rare.
        if self._lease_until is not None and now < self._lease_until - self.lease / 2:
            return True
        self._lease_until = await self.recorder.hold_lease(
            self.lease_id, self.owner, now, now + self.lease
        )
        return self._lease_until is not None


class _Child(Protocol):
    def set(self, value: float) -> None: ...


class BacklogGauge(Protocol):
    """A prometheus_client Gauge labelled by `service` (only what is used of it)."""

    def labels(self, *values: str) -> _Child: ...

    def clear(self) -> None: ...

    def collect(self) -> Iterable[Any]: ...

    def describe(self) -> Iterable[Any]: ...


class BacklogCollector:
    """A Prometheus collector (register it in a registry) that fills two gauges, not
    registered themselves, from `backlogs()` at each scrape: events unpublished and the
    oldest one's age, by service."""

    def __init__(self, unpublished: BacklogGauge, oldest_age: BacklogGauge) -> None:
        self.unpublished = unpublished
        self.oldest_age = oldest_age

    def describe(self) -> Iterator[Any]:
        yield from self.unpublished.describe()
        yield from self.oldest_age.describe()

    def collect(self) -> Iterator[Any]:
        now = datetime.now(UTC)
        self.unpublished.clear()
        self.oldest_age.clear()
        for service, backlog in backlogs().items():
            self.unpublished.labels(service).set(backlog.unpublished)
            self.oldest_age.labels(service).set(backlog.oldest_age(now))
        yield from self.unpublished.collect()
        yield from self.oldest_age.collect()
