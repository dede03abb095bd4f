"""The persistence port: what every event store implements (one class per database).

Handlers, the repository, the outbox relay and the projections take an `EventRecorder`;
`m8.eventstore` implements it on MongoDB and `m8.eventsourcing.memory` in memory. Each
implementation turns its database's errors into the errors below, in one place, so no
caller imports a driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from m8.eventsourcing.events import DomainEvent, Metadata, StoredEvent

Record = dict[str, Any]
# Read-model records carry the version of the events they were computed from
# (`EventRecorder.write_read_model`).
VERSION_FIELD = "_aggregate_version"


class ConcurrencyConflict(Exception):
    """Another writer changed the same data first: reload and decide again."""

    def __init__(self, aggregate_type: str, aggregate_id: str, expected_version: int) -> None:
        super().__init__(
            f"{aggregate_type} {aggregate_id!r} changed since version {expected_version}"
        )
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version


class TransactionConflict(ConcurrencyConflict):
    """A concurrent unit of work wrote the same data first: run it again."""

    def __init__(self) -> None:
        # Not one aggregate's conflict, so none of the aggregate fields mean anything.
        Exception.__init__(self, "a concurrent transaction changed the same data")
        self.aggregate_type = self.aggregate_id = ""
        self.expected_version = -1


class DuplicateRecord(Exception):
    """A record with this id exists already."""

    def __init__(self, collection: str, record_id: str) -> None:
        super().__init__(f"{collection} has a record {record_id!r} already")
        self.collection = collection
        self.record_id = record_id


class EventStoreUnavailable(Exception):
    """The event store failed or cannot be reached: try again later. Its message names the
    kind of failure only, never data."""


class NotRecorded(LookupError):
    """A message names an event that the event store does not hold (a forgery, or an event
    of another store)."""

    def __init__(self, message: StoredEvent) -> None:
        super().__init__(
            f"event {message.event_id} ({message.event_type}) is not in the event store as "
            f"an event of {message.aggregate_type} {message.aggregate_id!r}"
        )
        self.event_id = message.event_id


class EventSelector(Protocol):
    """Events of some types of one aggregate type; per store type when `store_types`
    (m8.messaging.permissions.EventKind is one)."""

    @property
    def aggregate_type(self) -> str: ...

    @property
    def event_types(self) -> tuple[str, ...]: ...

    @property
    def store_types(self) -> tuple[str, ...]: ...


class Records(Protocol):
    """Documents of one named collection beside the events, by their `_id` (a string)."""

    async def get(self, record_id: str) -> Record | None:
        """The record, or None."""
        ...

    async def insert(self, record: Mapping[str, Any]) -> None:
        """Adds a record (its `_id` included); DuplicateRecord if one has that id.

        Inside a unit of work a DuplicateRecord also fails the unit, as MongoDB aborts its
        transaction on a duplicate key: nothing of it is committed, every later call in
        it fails and it ends with TransactionConflict (so `in_transaction` runs it again).
        """
        ...

    async def delete(self, record_id: str) -> None:
        """Removes the record (nothing happens if there is none).

        Inside a unit of work, a record the unit cannot see (inserted by a rival after it
        began) stays; one that a rival changed or deleted meanwhile makes the unit end with
        TransactionConflict.
        """
        ...

    async def ids_due(self, field: str, until: datetime, limit: int) -> list[str]:
        """Ids of up to `limit` records whose `field` is at most `until`, earliest first."""
        ...


class UnitOfWork(Protocol):
    """One transaction: every append and record write through it commits together or not
    at all. A conflict with a concurrent unit of work raises ConcurrencyConflict."""

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
    ) -> list[StoredEvent]:
        """As EventRecorder.append, inside this unit of work."""
        ...

    async def load(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        """As EventRecorder.load, inside this unit of work."""
        ...

    def records(self, collection: str) -> Records:
        """The records of `collection`, read and written inside this unit of work."""
        ...


class EventRecorder(Protocol):
    """Appends and reads events; appending with an expected version is the concurrency
    check. Every method raises EventStoreUnavailable when the store fails."""

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
    ) -> list[StoredEvent]:
        """Records `events` after `expected_version`, all or none; ConcurrencyConflict if
        the aggregate is not at that version."""
        ...

    async def load(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        """One aggregate's events in version order."""
        ...

    def read_all(
        self, after: str | None = None, aggregate_type: str | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Every event (optionally of one aggregate type) after position `after`, in
        position order. The position is the event id: the order events were made in, not
        the order they were committed in (a unit of work that commits late has events
        behind positions already read), so it is no checkpoint to resume a subscription
        from. For tests and tools that read everything."""
        ...

    def aggregates(self, aggregate_type: str) -> AsyncIterator[tuple[str, list[StoredEvent]]]:
        """Every aggregate of a type with its events (version order), one at a time."""
        ...

    async def recorded(self, message: StoredEvent) -> tuple[StoredEvent, list[StoredEvent]]:
        """The store's own copy of the event a message carries, and all the events of its
        aggregate (version order); NotRecorded if the aggregate has no event of that id.

        Consumers act on this copy, never on the message: whoever can publish to the broker
        must not get m8 to act on an event that no service recorded.
        """
        ...

    async def redact(self, event_id: str, replacements: Mapping[str, Any]) -> bool:
        """Replaces fields of an event's data (the one sanctioned change to a stored event:
        dropping ciphertext once its key is destroyed). True if the event exists."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work: committed when the block ends, abandoned if it raises."""
        ...

    def records(self, collection: str) -> Records:
        """The records of `collection`, outside any unit of work (reads, and writes that
        stand alone)."""
        ...

    async def unpublished(
        self,
        limit: int,
        kinds: Sequence[EventSelector] | None = None,
        before: datetime | None = None,
    ) -> list[StoredEvent]:
        """The oldest events that go to the bus and are not yet confirmed published (only
        those of `kinds` if given, and only those made before `before` if given)."""
        ...

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        """Notes that the broker confirmed these events."""
        ...

    async def published(
        self, aggregate_type: str, aggregate_id: str, event_type: str, data: Mapping[str, Any]
    ) -> bool:
        """Whether the broker confirmed the newest event of `event_type` of that aggregate
        whose data holds the values of `data` (False if there is none, or it is not yet
        confirmed). Newest first along the aggregate's events: for an event of the last few.
        """
        ...

    async def hold_lease(
        self, lease_id: str, owner: str, now: datetime, until: datetime
    ) -> datetime | None:
        """Takes or renews lease `lease_id` for `owner` until `until`, unless another owner
        holds it past `now`; the time it is held until, or None if it is not ours."""
        ...

    async def write_read_model(self, name: str, record: Mapping[str, Any], version: int) -> None:
        """Replaces read-model record `record["_id"]` unless a newer version is there."""
        ...

    async def clear_read_model(self, name: str) -> None:
        """Deletes every record of read model `name` (before a rebuild)."""
        ...
