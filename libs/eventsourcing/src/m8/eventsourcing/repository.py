"""Loads aggregates from the event store and appends what they recorded."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TypeVar

from m8.eventsourcing.aggregate import Aggregate
from m8.eventsourcing.events import Metadata, StoredEvent, registry
from m8.eventsourcing.recorder import ConcurrencyConflict, EventRecorder, Records, UnitOfWork

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")
T = TypeVar("T")

# A unit of work that lost to a concurrent one runs again, up to ATTEMPTS times in all,
# after a random pause of up to _FIRST_PAUSE * 2**n seconds (at most _MAX_PAUSE): about
# 1 s of pauses at most, for hot aggregates (many uploads to one path at once).
ATTEMPTS = 8
_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.4


class _OpenUnit:
    """Marks the context of a running unit of work; `open` turns False when it ends."""

    def __init__(self) -> None:
        self.open = True


# The unit of work running in this context. A load, save or update through the repository
# itself would read or write outside its transaction, so they refuse while it is open. A
# task started inside `work` copies the context, so it counts as inside the unit until the
# unit ends, and as outside after (the mark is shared, not copied).
_open_unit: ContextVar[_OpenUnit | None] = ContextVar("m8_open_unit_of_work", default=None)


def _refuse_inside_unit(what: str) -> None:
    unit = _open_unit.get()
    if unit is not None and unit.open:
        raise OutsideUnitOfWork(f"inside a unit of work, {what} through its Transaction")


class OutsideUnitOfWork(RuntimeError):
    """A read or write meant for an open unit of work went past it (a programming error)."""


class Transaction:
    """What a handler's work sees inside `Repository.in_transaction`: loads, saves and
    record writes that all join one unit of work."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self.saved: list[StoredEvent] = []

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
        self.saved.extend(stored)
        return stored

    def records(self, collection: str) -> Records:
        """The records of `collection`, read and written in the unit of work."""
        return self._unit.records(collection)


# Told of the events of each append once they are committed (the outbox publishes them).
Appended = Callable[[Sequence[StoredEvent]], None]


class Repository:
    """Aggregates in, events out; hands what it appended to `on_append` after the commit."""

    def __init__(self, recorder: EventRecorder, on_append: Appended | None = None):
        self.recorder = recorder
        self.on_append = on_append

    async def load(self, cls: type[A], aggregate_id: str) -> A:
        """The aggregate as its events leave it (a new, empty one if it has none).

        Inside `in_transaction` this raises OutsideUnitOfWork: load through the
        Transaction there.
        """
        _refuse_inside_unit("load")
        stored = await self.recorder.load(cls.aggregate_type, aggregate_id)
        return cls.replay(aggregate_id, (event.decode(registry) for event in stored))

    async def save(self, aggregate: Aggregate, metadata: Metadata) -> list[StoredEvent]:
        """Appends the aggregate's pending events (ConcurrencyConflict if it moved on).

        Inside `in_transaction` this raises OutsideUnitOfWork: save through the
        Transaction there.
        """
        _refuse_inside_unit("save")
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
        self._appended(stored)
        return stored

    async def update(
        self,
        cls: type[A],
        aggregate_id: str,
        change: Callable[[A], R],
        metadata: Metadata,
        attempts: int = ATTEMPTS,
    ) -> tuple[A, R]:
        """Load, change, save; on a concurrency conflict, all again with fresh state.

        Inside `in_transaction` this raises OutsideUnitOfWork, as `load` and `save` do.
        """
        _refuse_inside_unit("update")

        async def attempt() -> tuple[A, R]:
            aggregate = await self.load(cls, aggregate_id)
            result = change(aggregate)
            await self.save(aggregate, metadata)
            return aggregate, result

        return await _retry_on_conflict(attempt, attempts)

    async def in_transaction(
        self, work: Callable[[Transaction], Awaitable[R]], attempts: int = ATTEMPTS
    ) -> R:
        """Runs `work(transaction)` in one unit of work; after the commit, hands the events
        it saved to `on_append`.

        On a ConcurrencyConflict (a stale expected version, or a conflict with a concurrent
        unit of work) the unit is abandoned and `work` runs again, so it must load what it
        decides on itself, through `transaction`. While it runs, this repository's own
        `load`, `save` and `update` raise OutsideUnitOfWork, in `work` and in any task it
        starts (until the unit ends).
        """

        async def attempt() -> tuple[R, list[StoredEvent]]:
            mark = _OpenUnit()
            token = _open_unit.set(mark)
            try:
                async with self.recorder.transaction() as unit:
                    transaction = Transaction(unit)
                    result = await work(transaction)
                return result, transaction.saved
            finally:
                mark.open = False
                _open_unit.reset(token)

        result, saved = await _retry_on_conflict(attempt, attempts)
        self._appended(saved)
        return result

    def _appended(self, events: Sequence[StoredEvent]) -> None:
        if events and self.on_append is not None:
            self.on_append(events)


async def _retry_on_conflict(attempt: Callable[[], Awaitable[T]], attempts: int) -> T:
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except ConcurrencyConflict:
            if n == attempts:
                raise
        # A rival whose transaction has not committed yet would make us lose again at once;
        # rivals that lost together must not come back together either (full jitter).
        await asyncio.sleep(random.uniform(0, min(_MAX_PAUSE, _FIRST_PAUSE * 2**n)))  # noqa: S311  # jitter, not crypto
    raise AssertionError("unreachable")
