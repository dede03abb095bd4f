"""The contract every event store implements (one class per database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from m8.eventsourcing.events import DomainEvent, Metadata, StoredEvent


class ConcurrencyConflict(Exception):
    """Another writer appended to the aggregate first: reload and decide again."""

    def __init__(self, aggregate_type: str, aggregate_id: str, expected_version: int) -> None:
        super().__init__(
            f"{aggregate_type} {aggregate_id!r} changed since version {expected_version}"
        )
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version


class EventRecorder(Protocol):
    """Appends and reads events; appending with an expected version is the concurrency check."""

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

    async def get(self, event_id: str) -> StoredEvent | None:
        """One event by id."""
        ...

    def read_all(
        self, after: str | None = None, aggregate_type: str | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Every event (optionally of one aggregate type) after position `after`, in
        position order. The position is the event id."""
        ...
