"""Relays for the events a test appends in the place of a service that does not run.

Each service's relay publishes only that service's events (m8.messaging.permissions), so
when a test records, say, a reactor's outcome itself, something must publish it as that
reactor's relay would: a relay for that service on one of the test's runtimes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from m8.eventstore import MongoEventRecorder, OutboxRelay
from m8.messaging import Broker
from m8.runtime import Runtime


def relay_events_of(runtime: Runtime, amqp_url: str, *services: str) -> None:
    """Publishes `services`' events while `runtime` runs, on a connection of their own to
    `amqp_url` (the test's administrator: the runtime's own user may not publish them)."""
    runtime.spawn(StandInRelays(runtime.recorder, amqp_url, services).run())


class StandInRelays:
    """Relays for `services` on a broker connection of their own, for tests that append
    those services' events before any runtime of theirs runs (or with none at all)."""

    def __init__(self, recorder: MongoEventRecorder, amqp_url: str, services: Sequence[str]):
        self.recorder = recorder
        self.amqp_url = amqp_url
        self.services = tuple(services)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts relaying in the background (needs a running event loop)."""
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stops relaying and closes the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """Relays until cancelled."""
        broker = await Broker.connect(self.amqp_url, "m8-test-stand-ins")
        try:
            relays = [
                OutboxRelay(
                    self.recorder,
                    broker,
                    owner=f"stand-in-{uuid.uuid4().hex}",
                    service=service,
                    # The test appended these itself: no process pushes them.
                    backstop_interval=0.05,
                    grace=0,
                )
                for service in self.services
            ]
            await asyncio.gather(*(relay.run() for relay in relays))
        finally:
            await broker.close()
