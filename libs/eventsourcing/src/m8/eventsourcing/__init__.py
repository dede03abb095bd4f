"""A small, generic event-sourcing layer: events, aggregates, the recorder port.

Nothing here knows MongoDB or RabbitMQ; `m8.eventstore` and `m8.messaging` do.
"""

from m8.eventsourcing.aggregate import Aggregate
from m8.eventsourcing.events import (
    DomainEvent,
    EventRegistry,
    Metadata,
    StoredEvent,
    UnknownEventType,
    registry,
)
from m8.eventsourcing.recorder import (
    ConcurrencyConflict,
    DuplicateRecord,
    EventRecorder,
    EventStoreUnavailable,
    NotRecorded,
    Record,
    Records,
    TransactionConflict,
    UnitOfWork,
)
from m8.eventsourcing.repository import OutsideUnitOfWork, Repository, Transaction

__all__ = [
    "Aggregate",
    "ConcurrencyConflict",
    "DomainEvent",
    "DuplicateRecord",
    "EventRecorder",
    "EventRegistry",
    "EventStoreUnavailable",
    "Metadata",
    "NotRecorded",
    "OutsideUnitOfWork",
    "Record",
    "Records",
    "Repository",
    "StoredEvent",
    "Transaction",
    "TransactionConflict",
    "UnitOfWork",
    "UnknownEventType",
    "registry",
]
