"""The recorder port in memory: for fast tests of handlers, and the contract suite's
second implementation beside MongoDB.

A unit of work writes to a copy of the state and logs what it did; its commit replays
the log on the current state, in one step (no await, so nothing interleaves), and fails
with a ConcurrencyConflict if a rival changed what it wrote meanwhile. An abandoned unit
leaves nothing behind. As MongoDB aborts a transaction on a duplicate key, a
DuplicateRecord fails its unit: every later call in it and its commit raise
TransactionConflict.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from m8.eventsourcing.events import DomainEvent, Metadata, StoredEvent
from m8.eventsourcing.recorder import (
    VERSION_FIELD,
    ConcurrencyConflict,
    DuplicateRecord,
    EventSelector,
    NotRecorded,
    Record,
    TransactionConflict,
)


@dataclasses.dataclass
class _State:
    events: list[StoredEvent] = dataclasses.field(default_factory=list)
    collections: dict[str, dict[str, Record]] = dataclasses.field(default_factory=dict)
    published: set[str] = dataclasses.field(default_factory=set)

    def copy(self) -> _State:
        return _State(list(self.events), copy.deepcopy(self.collections), set(self.published))


Change = Callable[[_State], None]


class InMemoryRecords:
    """The records of one collection of a state (the current one, looked up on each use);
    in a unit of work, its changes are also logged for the commit."""

    def __init__(
        self, state: Callable[[], _State], name: str, unit: InMemoryUnitOfWork | None = None
    ) -> None:
        self.name = name
        self._state = state
        self.unit = unit

    @property
    def records(self) -> dict[str, Record]:
        if self.unit is not None:
            self.unit.check_usable()
        return self._state().collections.setdefault(self.name, {})

    async def get(self, record_id: str) -> Record | None:
        found = self.records.get(record_id)
        return copy.deepcopy(found) if found is not None else None

    async def insert(self, record: Mapping[str, Any]) -> None:
        record_id = str(record["_id"])
        if record_id in self.records:
            if self.unit is not None:
                self.unit.failed = True
            raise DuplicateRecord(self.name, record_id)
        kept = self.records[record_id] = copy.deepcopy(dict(record))
        if self.unit is not None:
            self.unit.log.append(lambda state: _insert_again(state, self.name, kept))

    async def delete(self, record_id: str) -> None:
        seen = self.records.pop(record_id, None)
        if self.unit is not None and seen is not None:
            # Like MongoDB's snapshot: a record this unit never saw is not its to delete.
            self.unit.log.append(lambda state: _delete_again(state, self.name, record_id, seen))

    async def ids_due(self, field: str, until: datetime, limit: int) -> list[str]:
        due = [r for r in self.records.values() if field in r and r[field] <= until]
        return [str(r["_id"]) for r in sorted(due, key=lambda r: r[field])][:limit]


def _append(
    state: _State,
    aggregate_type: str,
    aggregate_id: str,
    expected_version: int,
    events: Sequence[DomainEvent],
    metadata: Metadata,
) -> list[StoredEvent]:
    current = len(_load(state, aggregate_type, aggregate_id))
    if current != expected_version:
        raise ConcurrencyConflict(aggregate_type, aggregate_id, expected_version)
    stored = [
        StoredEvent.new(aggregate_type, aggregate_id, expected_version + n, event, metadata)
        for n, event in enumerate(events, start=1)
    ]
    state.events.extend(stored)
    return stored


def _insert_again(state: _State, name: str, record: Mapping[str, Any]) -> None:
    records = state.collections.setdefault(name, {})
    if str(record["_id"]) in records:  # a rival inserted it after this unit began
        raise TransactionConflict()
    records[str(record["_id"])] = copy.deepcopy(dict(record))


def _delete_again(state: _State, name: str, record_id: str, seen: Record) -> None:
    records = state.collections.get(name, {})
    if records.get(record_id) != seen:  # a rival changed or deleted it after this unit read it
        raise TransactionConflict()
    del records[record_id]


def _append_again(state: _State, stored: Sequence[StoredEvent]) -> None:
    first = stored[0]
    if len(_load(state, first.aggregate_type, first.aggregate_id)) != first.version - 1:
        raise ConcurrencyConflict(first.aggregate_type, first.aggregate_id, first.version - 1)
    state.events.extend(stored)


def _load(state: _State, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
    return [
        e
        for e in state.events
        if e.aggregate_type == aggregate_type and e.aggregate_id == aggregate_id
    ]


class InMemoryUnitOfWork:
    """Writes to a private copy of the state and logs each change for the commit."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.log: list[Change] = []
        # Set by a DuplicateRecord: MongoDB aborts the transaction then.
        self.failed = False

    def check_usable(self) -> None:
        """TransactionConflict once a DuplicateRecord failed this unit."""
        if self.failed:
            raise TransactionConflict()

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
    ) -> list[StoredEvent]:
        self.check_usable()
        stored = _append(
            self.state, aggregate_type, aggregate_id, expected_version, events, metadata
        )
        if stored:
            self.log.append(lambda state: _append_again(state, stored))
        return stored

    async def load(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        self.check_usable()
        return _load(self.state, aggregate_type, aggregate_id)

    def records(self, collection: str) -> InMemoryRecords:
        return InMemoryRecords(lambda: self.state, collection, self)


class InMemoryEventRecorder:
    """Events, records and read models in dicts; positions are the event ids, which grow."""

    def __init__(self) -> None:
        self.state = _State()
        self.read_models: dict[str, dict[str, Record]] = {}
        self.leases: dict[str, tuple[str, datetime]] = {}

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
    ) -> list[StoredEvent]:
        return _append(self.state, aggregate_type, aggregate_id, expected_version, events, metadata)

    async def load(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        return _load(self.state, aggregate_type, aggregate_id)

    async def read_all(
        self, after: str | None = None, aggregate_type: str | None = None
    ) -> AsyncIterator[StoredEvent]:
        for event in sorted(self.state.events, key=lambda e: e.event_id):
            if after is not None and event.event_id <= after:
                continue
            if aggregate_type is None or event.aggregate_type == aggregate_type:
                yield event

    async def aggregates(self, aggregate_type: str) -> AsyncIterator[tuple[str, list[StoredEvent]]]:
        ids = sorted(
            {e.aggregate_id for e in self.state.events if e.aggregate_type == aggregate_type}
        )
        for aggregate_id in ids:
            yield aggregate_id, _load(self.state, aggregate_type, aggregate_id)

    async def recorded(self, message: StoredEvent) -> tuple[StoredEvent, list[StoredEvent]]:
        events = await self.load(message.aggregate_type, message.aggregate_id)
        stored = next((e for e in events if e.event_id == message.event_id), None)
        if stored is None:
            raise NotRecorded(message)
        return stored, events

    async def redact(self, event_id: str, replacements: Mapping[str, Any]) -> bool:
        for n, event in enumerate(self.state.events):
            if event.event_id == event_id:
                data = {**event.data, **replacements}
                self.state.events[n] = dataclasses.replace(event, data=data)
                return True
        return False

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryUnitOfWork]:
        """A unit of work on a copy of the state; its commit replays its changes on the
        current state at once (ConcurrencyConflict if a rival's changes collide, and
        TransactionConflict if a DuplicateRecord failed it)."""
        unit = InMemoryUnitOfWork(self.state.copy())
        yield unit
        unit.check_usable()
        committed = self.state.copy()
        for change in unit.log:
            change(committed)
        self.state = committed

    def records(self, collection: str) -> InMemoryRecords:
        return InMemoryRecords(lambda: self.state, collection)

    async def unpublished(
        self,
        limit: int,
        kinds: Sequence[EventSelector] | None = None,
        before: datetime | None = None,
    ) -> list[StoredEvent]:
        pending = [
            e
            for e in sorted(self.state.events, key=lambda e: e.event_id)
            if e.on_bus
            and e.event_id not in self.state.published
            and (kinds is None or any(_selects(kind, e) for kind in kinds))
            and (before is None or e.recorded_at < before)
        ]
        return pending[:limit]

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        self.state.published.update(event_ids)

    async def published(
        self, aggregate_type: str, aggregate_id: str, event_type: str, data: Mapping[str, Any]
    ) -> bool:
        for event in reversed(_load(self.state, aggregate_type, aggregate_id)):
            if event.event_type == event_type and all(
                event.data.get(name) == value for name, value in data.items()
            ):
                return event.event_id in self.state.published
        return False

    async def hold_lease(
        self, lease_id: str, owner: str, now: datetime, until: datetime
    ) -> datetime | None:
        holder = self.leases.get(lease_id)
        if holder is not None and holder[0] != owner and holder[1] >= now:
            return None
        self.leases[lease_id] = (owner, until)
        return until

    async def write_read_model(self, name: str, record: Mapping[str, Any], version: int) -> None:
        documents = self.read_models.setdefault(name, {})
        existing = documents.get(str(record["_id"]))
        if existing is None or existing[VERSION_FIELD] <= version:
            documents[str(record["_id"])] = {**copy.deepcopy(dict(record)), VERSION_FIELD: version}

    async def clear_read_model(self, name: str) -> None:
        self.read_models.pop(name, None)


def _selects(kind: EventSelector, event: StoredEvent) -> bool:
    if event.aggregate_type != kind.aggregate_type or event.event_type not in kind.event_types:
        return False
    if kind.store_types:
        return event.routing_suffix in kind.store_types
    return event.routing_suffix is None
