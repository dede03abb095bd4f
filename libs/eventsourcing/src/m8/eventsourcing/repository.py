"""Loads aggregates from the event store and appends what they recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

from m8.eventsourcing.aggregate import Aggregate
from m8.eventsourcing.events import Metadata, StoredEvent, registry
from m8.eventsourcing.recorder import ConcurrencyConflict, EventRecorder, Records, UnitOfWork

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")
T = TypeVar("T")

ATTEMPTS = 5

# Set while a unit of work runs in this task: a save that bypasses it would land outside
# its transaction, so Repository.save refuses then.
_open_unit: ContextVar[bool] = ContextVar("m8_open_unit_of_work", default=False)


class OutsideUnitOfWork(RuntimeError):
    """A write meant for an open unit of work went past it (a programming error)."""


class Transaction:
    """What a handler's work sees inside `Repository.in_transaction`: loads, saves and
    record writes that all join one unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    async def load(self, cls: type[A], aggregate_id: str) -> A:
        """The aggregate as its events leave it, read in the unit of work."""
        stored = await self._unit.load(cls.aggregate_type, aggregate_id)
        return cls.replay(aggregate_id, (event.decode(registry) for event in stored))

    async def save(self, aggregate: Aggregate, metadata: Metadata) -> list[StoredEvent]:
        """Appends the aggregate's pending events in the unit of work."""
        if not aggregate.pending:
            return []
        stored = await self._unit.append(
            aggregate.aggregate_type,
            aggregate.id,
            aggregate.recorded_version,
            aggregate.pending,
            metadata,
        )
        aggregate.pending = []
        return stored

    def records(self, collection: str) -> Records:
        """The records of `collection`, read and written in the unit of work."""
        return self._unit.records(collection)


class Repository:
    """Aggregates in, events out; wakes the outbox relay after each append."""

    def __init__(self, recorder: EventRecorder, on_append: Callable[[], None] | None = None):
        self.recorder = recorder
        self.on_append = on_append

    async def load(self, cls: type[A], aggregate_id: str) -> A:
        """The aggregate as its events leave it (a new, empty one if it has none)."""
        stored = await self.recorder.load(cls.aggregate_type, aggregate_id)
        return cls.replay(aggregate_id, (event.decode(registry) for event in stored))

    async def save(self, aggregate: Aggregate, metadata: Metadata) -> list[StoredEvent]:
        """Appends the aggregate's pending events (ConcurrencyConflict if it moved on).

        Inside `in_transaction` this raises OutsideUnitOfWork: save through the
        Transaction there.
        """
        if _open_unit.get():
            raise OutsideUnitOfWork("inside a unit of work, save through its Transaction")
        if not aggregate.pending:
            return []
        stored = await self.recorder.append(
            aggregate.aggregate_type,
            aggregate.id,
            aggregate.recorded_version,
            aggregate.pending,
            metadata,
        )
        aggregate.pending = []
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
        self, work: Callable[[Transaction], Awaitable[R]], attempts: int = ATTEMPTS
    ) -> R:
        """Runs `work(transaction)` in one unit of work and wakes the relay after the commit.

        On a ConcurrencyConflict (a stale expected version, or a conflict with a concurrent
        unit of work) the unit is abandoned and `work` runs again, so it must load what it
        decides on itself, through `transaction`.
        """

        async def attempt() -> R:
            token = _open_unit.set(True)
            try:
                async with self.recorder.transaction() as unit:
                    return await work(Transaction(unit))
            finally:
                _open_unit.reset(token)

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
