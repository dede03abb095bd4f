"""The MongoDB event store, its transactional outbox relay and projections."""

from m8.eventstore.inbox import MongoInbox
from m8.eventstore.mongo import MongoEventRecorder, TransactionConflict, connect_database
from m8.eventstore.outbox import OutboxRelay
from m8.eventstore.projections import Projection, ProjectionRunner
from m8.eventstore.repository import Repository

__all__ = [
    "MongoEventRecorder",
    "MongoInbox",
    "OutboxRelay",
    "Projection",
    "ProjectionRunner",
    "Repository",
    "TransactionConflict",
    "connect_database",
]
