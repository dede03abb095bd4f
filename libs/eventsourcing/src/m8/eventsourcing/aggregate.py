"""The aggregate base: state rebuilt from its events, new events collected for append."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Self

from m8.eventsourcing.events import DomainEvent


class Aggregate:
    """A consistency boundary. Subclasses change state only in `apply`.

    Commands validate, then call `_record(event)`, which applies the event and queues it;
    the handler appends `pending` with `version - len(pending)` as the expected version.
    """

    aggregate_type: ClassVar[str]

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self.pending: list[DomainEvent] = []

    @classmethod
    def replay(cls, aggregate_id: str, events: Iterable[DomainEvent]) -> Self:
        """The aggregate as its recorded events leave it."""
        aggregate = cls(aggregate_id)
        for event in events:
            aggregate.apply(event)
            aggregate.version += 1
        return aggregate

    @property
    def exists(self) -> bool:
        """Whether any event has been recorded or raised for it."""
        return self.version > 0

    @property
    def recorded_version(self) -> int:
        """The version the store holds: the expected version for appending `pending`."""
        return self.version - len(self.pending)

    def apply(self, event: DomainEvent) -> None:
        """Changes state for one event; must not fail for any recorded event."""
        raise NotImplementedError

    def _record(self, event: DomainEvent) -> None:
        self.apply(event)
        self.version += 1
        self.pending.append(event)
