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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from m8.eventsourcing import EventRecorder, EventStoreUnavailable, StoredEvent
from m8.messaging import Broker
from m8.messaging.permissions import publishes

log = logging.getLogger(__name__)

LEASE_ID = "outbox"


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
        async with asyncio.TaskGroup() as group:
            group.create_task(self._push())
            group.create_task(self._backstop())

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
                more = (
                    await self._hold_lease()
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
        return await self._publish(events) if events else 0

    async def flush(self) -> None:
        """Publishes what this process submitted and has not published yet: at shutdown,
        so that none of it waits for the backstop (which sends the rest)."""
        await self.push_submitted()

    async def _publish(self, events: Sequence[StoredEvent]) -> int:
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
        return len(confirmed)

    async def _hold_lease(self) -> bool:
        now = datetime.now(UTC)
        # Renewing at half time keeps lease writes rare.
        if self._lease_until is not None and now < self._lease_until - self.lease / 2:
            return True
        self._lease_until = await self.recorder.hold_lease(
            self.lease_id, self.owner, now, now + self.lease
        )
        return self._lease_until is not None
