"""Event types and helpers that the event store and messaging tests share."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from m8.eventsourcing import DomainEvent, Metadata, StoredEvent, registry

METADATA = Metadata(actor="test", correlation_id="corr-test")


@registry.register("SampleHappened", version=1)
@dataclass(frozen=True)
class SampleHappened(DomainEvent):
    """A neutral event for exercising the machinery."""

    n: int


@dataclass
class Received:
    """Records what a consumer's handler saw."""

    ids: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, event: StoredEvent) -> None:
        self.ids.append(event.event_id)
        self.changed.set()

    def duplicates(self) -> list[str]:
        return [i for i, count in Counter(self.ids).items() if count > 1]

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(set(self.ids)) < count:
                self.changed.clear()
                await self.changed.wait()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    """Waits until `check` holds (polling), or fails the test."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)
