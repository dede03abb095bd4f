"""The event recorder on MongoDB (PyMongo's asyncio API).

One document per event in `events`; a unique index on (aggregate_type, aggregate_id,
version) makes a second writer at the same version fail, which is the optimistic
concurrency check. Each new event carries `published: false`: the outbox relay reads
those, so storing and publishing never disagree after a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from m8.eventsourcing import ConcurrencyConflict, DomainEvent, Metadata, StoredEvent
from m8.messaging.permissions import EventKind

log = logging.getLogger(__name__)

Document = dict[str, Any]
DUPLICATE_KEY = 11000
WRITE_CONFLICT = 112
# The `published` mark of a document the outbox cannot decode: out of its scan, kept.
UNDECODABLE = "undecodable"


class TransactionConflict(ConcurrencyConflict):
    """A concurrent transaction wrote the same documents first: run the transaction again."""

    def __init__(self) -> None:
        # Not one aggregate's conflict, so none of the aggregate fields mean anything.
        Exception.__init__(self, "a concurrent transaction changed the same data")
        self.aggregate_type = self.aggregate_id = ""
        self.expected_version = -1


class NotRecorded(LookupError):
    """A message names an event that the event store does not hold (a forgery, or an event
    of another store)."""

    def __init__(self, message: StoredEvent) -> None:
        super().__init__(
            f"event {message.event_id} ({message.event_type}) is not in the event store as "
            f"an event of {message.aggregate_type} {message.aggregate_id!r}"
        )
        self.event_id = message.event_id


async def connect_database(uri: str, name: str) -> AsyncDatabase[Document]:
    """A database handle on a new client (the caller closes `db.client`)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    return client[name]


def to_document(event: StoredEvent) -> Document:
    """The MongoDB document of a stored event."""
    return {
        "_id": ObjectId(event.event_id),
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "version": event.version,
        "type": event.event_type,
        "type_version": event.event_version,
        "data": dict(event.data),
        "metadata": dataclasses.asdict(event.metadata),
        "recorded_at": event.recorded_at,
        "routing_suffix": event.routing_suffix,
        "published": False,
    }


def from_document(doc: Mapping[str, Any]) -> StoredEvent:
    """The stored event of a MongoDB document."""
    return StoredEvent(
        event_id=str(doc["_id"]),
        aggregate_type=doc["aggregate_type"],
        aggregate_id=doc["aggregate_id"],
        version=doc["version"],
        event_type=doc["type"],
        event_version=doc["type_version"],
        data=doc["data"],
        metadata=Metadata(**doc["metadata"]),
        recorded_at=doc["recorded_at"],
        routing_suffix=doc.get("routing_suffix"),
    )


class MongoEventRecorder:
    """Events in one MongoDB collection, with the outbox flag beside each."""

    def __init__(self, db: AsyncDatabase[Document], collection: str = "events") -> None:
        self.db = db
        self.events = db[collection]

    async def create_indexes(self) -> None:
        """Idempotent: the uniqueness that is the concurrency check, and the outbox's scan."""
        await self.events.create_index(
            [("aggregate_type", ASCENDING), ("aggregate_id", ASCENDING), ("version", ASCENDING)],
            unique=True,
            name="aggregate_version",
        )
        await self.events.create_index(
            [("published", ASCENDING), ("_id", ASCENDING)], name="outbox"
        )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A transaction that appends and other writes of the caller share.

        Committed when the block ends, aborted if it raises. A write conflict with a
        concurrent transaction is raised as a ConcurrencyConflict (`TransactionConflict`):
        like a stale expected version, it means "decide again on fresh state".
        """
        try:
            async with (
                self.db.client.start_session() as session,
                await session.start_transaction(),
            ):
                yield session
        except PyMongoError as exc:
            if exc.has_error_label("TransientTransactionError") or _code(exc) == WRITE_CONFLICT:
                raise TransactionConflict() from None
            raise

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
        session: AsyncClientSession | None = None,
    ) -> list[StoredEvent]:
        """Records `events` after `expected_version`, all or none."""
        stored = [
            StoredEvent.new(aggregate_type, aggregate_id, expected_version + n, event, metadata)
            for n, event in enumerate(events, start=1)
        ]
        docs = [to_document(event) for event in stored]
        try:
            if len(docs) == 1 or session is not None:
                await self.events.insert_many(docs, ordered=True, session=session)
            else:
                # Several events must land together, or a rival could slip in between.
                async with self.transaction() as txn:
                    await self.events.insert_many(docs, ordered=True, session=txn)
        except (DuplicateKeyError, BulkWriteError) as exc:
            if _is_duplicate(exc):
                raise ConcurrencyConflict(aggregate_type, aggregate_id, expected_version) from None
            raise
        except OperationFailure as exc:
            # Inside a transaction a rival's insert shows as a write conflict instead.
            if exc.code == WRITE_CONFLICT:
                raise ConcurrencyConflict(aggregate_type, aggregate_id, expected_version) from None
            raise
        except TransactionConflict:
            # Our own transaction for several events met a rival's.
            raise ConcurrencyConflict(aggregate_type, aggregate_id, expected_version) from None
        return stored

    async def load(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        """One aggregate's events in version order (an index scan, never the whole store)."""
        cursor = self.events.find(
            {"aggregate_type": aggregate_type, "aggregate_id": aggregate_id}
        ).sort("version", ASCENDING)
        return [from_document(doc) async for doc in cursor]

    async def recorded(self, message: StoredEvent) -> tuple[StoredEvent, list[StoredEvent]]:
        """The event store's own copy of the event a message carries, and all the events of
        its aggregate (version order); NotRecorded if the aggregate has no event of that id.

        Consumers act on this copy, never on the message: whoever can publish to the broker
        must not get m8 to act on an event that no service recorded.
        """
        events = await self.load(message.aggregate_type, message.aggregate_id)
        stored = next((e for e in events if e.event_id == message.event_id), None)
        if stored is None:
            raise NotRecorded(message)
        return stored, events

    async def get(self, event_id: str) -> StoredEvent | None:
        """One event by id (None for an unknown or malformed id)."""
        if not ObjectId.is_valid(event_id):
            return None
        doc = await self.events.find_one({"_id": ObjectId(event_id)})
        return from_document(doc) if doc else None

    async def read_all(
        self, after: str | None = None, aggregate_type: str | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Every event after position `after` (an event id), in id order."""
        query: Document = {}
        if after is not None:
            query["_id"] = {"$gt": ObjectId(after)}
        if aggregate_type is not None:
            query["aggregate_type"] = aggregate_type
        async for doc in self.events.find(query).sort("_id", ASCENDING).batch_size(1000):
            yield from_document(doc)

    async def unpublished(
        self, limit: int, kinds: Sequence[EventKind] | None = None
    ) -> list[StoredEvent]:
        """The oldest events the relay has not yet seen confirmed by the broker; only
        those of `kinds` when given (a service's relay publishes only its own events).

        A document that is no valid event (changed by hand, say) is set aside as
        `published: "undecodable"` and logged, so it cannot hold up the events behind it.
        """
        query: Document = {"published": False}
        if kinds is not None:
            query["$or"] = [_kind_query(kind) for kind in kinds]
        cursor = self.events.find(query).sort("_id", ASCENDING).limit(limit)
        events = []
        async for doc in cursor:
            try:
                events.append(_publishable(doc))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                await self.events.update_one(
                    {"_id": doc["_id"]}, {"$set": {"published": UNDECODABLE}}
                )
                log.error(
                    "undecodable event set aside, it will not be published: repair it and "
                    "set published to false, or delete it",
                    extra={"event_id": str(doc["_id"]), "problem": f"{type(exc).__name__}: {exc}"},
                )
        return events

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        """Notes that the broker confirmed these events."""
        await self.events.update_many(
            {"_id": {"$in": [ObjectId(i) for i in event_ids]}}, {"$set": {"published": True}}
        )

    async def redact(self, event_id: str, replacements: Mapping[str, Any]) -> bool:
        """Replaces fields of an event's data (the one sanctioned change to a stored event:
        dropping ciphertext once its key is destroyed). True if the event exists."""
        updates = {f"data.{name}": value for name, value in replacements.items()}
        result = await self.events.update_many({"_id": ObjectId(event_id)}, {"$set": updates})
        return result.matched_count == 1


def _kind_query(kind: EventKind) -> Document:
    # Events without a routing suffix store None there.
    suffix: Any = {"$in": list(kind.store_types)} if kind.store_types else None
    return {
        "aggregate_type": kind.aggregate_type,
        "type": {"$in": list(kind.event_types)},
        "routing_suffix": suffix,
    }


def _publishable(doc: Mapping[str, Any]) -> StoredEvent:
    # The relay marks events by ObjectId and sends them as JSON: both must work.
    if not isinstance(doc["_id"], ObjectId):
        raise TypeError("_id is not an ObjectId")
    event = from_document(doc)
    json.dumps(event.to_json())
    return event


def _code(exc: PyMongoError) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _is_duplicate(exc: DuplicateKeyError | BulkWriteError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    errors = exc.details.get("writeErrors", [])
    return bool(errors) and all(e.get("code") == DUPLICATE_KEY for e in errors)
