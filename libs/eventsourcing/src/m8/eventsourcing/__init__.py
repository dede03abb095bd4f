"""A small, generic event-sourcing layer: events, aggregates, the recorder contract.

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
from m8.eventsourcing.recorder import ConcurrencyConflict, EventRecorder

__all__ = [
    "Aggregate",
    "ConcurrencyConflict",
    "DomainEvent",
    "EventRecorder",
    "EventRegistry",
    "Metadata",
    "StoredEvent",
    "UnknownEventType",
    "registry",
]
