"""Loads aggregates from the event store and appends what they recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession

from m8.eventsourcing import Aggregate, ConcurrencyConflict, Metadata, StoredEvent, registry
from m8.eventstore.mongo import MongoEventRecorder

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")
T = TypeVar("T")

ATTEMPTS = 5


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
        """Appends the aggregate's pending events (ConcurrencyConflict if it moved on).

        Inside a transaction (`session`) the relay is not woken: the commit may still fail.
        `in_transaction` wakes it after the commit.
        """
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
        if session is None:
            self._wake_relay()
        return stored

    async def update(
        self,
        cls: type[A],
        aggregate_id: str,
        change: Callable[[A], R],
        metadata: Metadata,
        attempts: int = ATTEMPTS,
    ) -> tuple[A, R]:
        """Load, change, save; on a concurrency conflict, all again with fresh state."""

        async def attempt() -> tuple[A, R]:
            aggregate = await self.load(cls, aggregate_id)
            result = change(aggregate)
            await self.save(aggregate, metadata)
            return aggregate, result

        return await _retry_on_conflict(attempt, attempts)

    async def in_transaction(
        self, work: Callable[[AsyncClientSession], Awaitable[R]], attempts: int = ATTEMPTS
    ) -> R:
        """Runs `work(session)` in one transaction and wakes the relay after the commit.

        On a ConcurrencyConflict (a stale expected version, or a write conflict with a
        concurrent transaction) the transaction is aborted and `work` runs again, so it
        must load what it decides on itself. Pass `session` to every write, including
        `save(..., session=session)`.
        """

        async def attempt() -> R:
            async with self.recorder.transaction() as session:
                return await work(session)

        result = await _retry_on_conflict(attempt, attempts)
        self._wake_relay()
        return result

    def _wake_relay(self) -> None:
        if self.on_append is not None:
            self.on_append()


async def _retry_on_conflict(attempt: Callable[[], Awaitable[T]], attempts: int) -> T:
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except ConcurrencyConflict:
            if n == attempts:
                raise
        # A rival whose transaction has not committed yet would make us lose again at once.
        await asyncio.sleep(0.005 * 2**n)
    raise AssertionError("unreachable")
