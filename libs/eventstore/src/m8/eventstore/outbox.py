"""The outbox relay: publishes stored events that the broker has not confirmed yet.

Appending marks each event `published: false` in the same write; the relay publishes
those with publisher confirms and then marks them published. A crash between the two
republishes with the same message id, which consumers absorb.

Each service runs its own relay, publishing only the events it owns
(`m8.messaging.permissions.publishes`) with its own broker credentials, which allow
those routing keys and no others; events appended by older code are published by their
owner's relay all the same. One relay per service holds that service's lease
(`outbox:<service>`), so that its replicas do not all publish every event. A
document that does not decode is set aside (see `EventRecorder.unpublished`) rather
than stopping the relay, or every relay after it, in front of it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from m8.eventsourcing import EventRecorder, EventStoreUnavailable
from m8.messaging import Broker
from m8.messaging.permissions import publishes

log = logging.getLogger(__name__)

LEASE_ID = "outbox"


def lease_id(service: str | None) -> str:
    """The lease of `service`'s relays (`outbox` for a relay of every event)."""
    return f"{LEASE_ID}:{service}" if service else LEASE_ID


class OutboxRelay:
    """Publishes unpublished events (of `service`, or all) in id order, in batches, while
    holding the lease."""

    def __init__(
        self,
        recorder: EventRecorder,
        broker: Broker,
        *,
        owner: str,
        service: str | None = None,
        batch: int = 200,
        poll_interval: float = 0.2,
        lease_seconds: float = 10.0,
        confirm_timeout: float = 10.0,
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
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=lease_seconds)
        self.confirm_timeout = confirm_timeout
        self.max_backoff = max_backoff
        self._lease_until: datetime | None = None
        self._wakeup = asyncio.Event()

    def notify(self) -> None:
        """Wakes the relay now (called after an append in this process)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Relays until cancelled; survives broker and database outages, and bad events."""
        failures = 0
        while True:
            try:
                more = await self._hold_lease() and await self.publish_pending() >= self.batch
                failures = 0
            except (EventStoreUnavailable, OSError) as exc:
                more, failures = False, failures + 1
                log.warning("outbox relay pass failed, retrying: %s", exc)
            except Exception:
                # Whatever it is, the relay must go on: without it nothing is published.
                more, failures = False, failures + 1
                log.exception("outbox relay pass failed unexpectedly, retrying")
            if more:
                continue
            if failures:
                await asyncio.sleep(min(self.poll_interval * 2**failures, self.max_backoff))
                continue
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def publish_pending(self) -> int:
        """One pass: publishes up to `batch` events; returns how many were confirmed."""
        events = await self.recorder.unpublished(self.batch, self.kinds)
        if not events:
            return 0
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
            await asyncio.sleep(self.poll_interval)
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
