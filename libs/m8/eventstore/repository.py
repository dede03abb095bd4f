"""Loads aggregates from the event store and appends what they recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession

from m8.eventsourcing import Aggregate, ConcurrencyConflict, Metadata, StoredEvent, registry
from m8.eventstore.mongo import MongoEventRecorder

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")


class Repository:
    """Aggregates in, events out; wakes the outbox relay after each append."""

    def __init__(
        self, recorder: MongoEventRecorder, on_append: Callable[[], None] | None = None
    ) -> None:
        self.recorder = recorder
        self.on_append = on_append

    async def load(self, cls: type[A], aggregate_id: str) -> A:
        """The aggregate as its events leave it (a new, empty one if it has none)."""
        stored = await self.recorder.load(cls.aggregate_type, aggregate_id)
        return cls.replay(aggregate_id, (event.decode(registry) for event in stored))

    async def save(
        self, aggregate: Aggregate, metadata: Metadata, session: AsyncClientSession | None = None
    ) -> list[StoredEvent]:
        """Appends the aggregate's pending events (ConcurrencyConflict if it moved on)."""
        if not aggregate.pending:
            return []
        stored = await self.recorder.append(
            aggregate.aggregate_type,
            aggregate.id,
            aggregate.recorded_version,
            aggregate.pending,
            metadata,
            session=session,
        )
        aggregate.pending = []
        if self.on_append is not None and session is None:
            self.on_append()
        return stored

    async def update(
        self,
        cls: type[A],
        aggregate_id: str,
        change: Callable[[A], R],
        metadata: Metadata,
        attempts: int = 5,
    ) -> tuple[A, R]:
        """Load, change, save; on a concurrency conflict, all again with fresh state."""
        for attempt in range(1, attempts + 1):
            aggregate = await self.load(cls, aggregate_id)
            result = change(aggregate)
            try:
                await self.save(aggregate, metadata)
            except ConcurrencyConflict:
                if attempt == attempts:
                    raise
                continue
            return aggregate, result
        raise AssertionError("unreachable")
