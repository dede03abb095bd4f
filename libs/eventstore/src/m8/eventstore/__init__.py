"""The MongoDB event store (the recorder port's MongoDB side) and the outbox relay (which
takes any recorder)."""

from m8.eventstore.inbox import MongoInbox
from m8.eventstore.mongo import (
    EVENTS,
    MongoEventRecorder,
    connect_database,
    mongo_errors,
    unauthorized,
)
from m8.eventstore.outbox import OutboxRelay

__all__ = [
    "EVENTS",
    "MongoEventRecorder",
    "MongoInbox",
    "OutboxRelay",
    "connect_database",
    "mongo_errors",
    "unauthorized",
]
