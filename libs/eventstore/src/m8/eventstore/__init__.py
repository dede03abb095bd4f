"""The MongoDB event store (the recorder port's MongoDB side), the outbox relay and the
projection runner (which take any recorder)."""

from m8.eventsourcing import Repository, TransactionConflict
from m8.eventstore.inbox import MongoInbox
from m8.eventstore.mongo import MongoEventRecorder, connect_database, mongo_errors
from m8.eventstore.outbox import OutboxRelay
from m8.eventstore.projections import Projection, ProjectionRunner

__all__ = [
    "MongoEventRecorder",
    "MongoInbox",
    "OutboxRelay",
    "Projection",
    "ProjectionRunner",
    "Repository",
    "TransactionConflict",
    "connect_database",
    "mongo_errors",
]
