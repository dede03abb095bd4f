"""The event recorder on MongoDB (PyMongo's asyncio API).

MongoDB's errors become m8's (m8.eventsourcing.recorder) here and nowhere else: see
`mongo_errors`. One document per event in `events`; a unique index on (aggregate_type, aggregate_id,
version) makes a second writer at the same version fail, which is the optimistic
concurrency check. Each new event that goes to the bus carries `published: false`: the
outbox relay reads those, so storing and publishing never disagree after a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from m8.eventsourcing import (
    ConcurrencyConflict,
    DomainEvent,
    DuplicateRecord,
    EventStoreUnavailable,
    Metadata,
    NotRecorded,
    Record,
    StoredEvent,
    TransactionConflict,
)
from m8.eventsourcing.recorder import VERSION_FIELD, EventSelector

log = logging.getLogger(__name__)

Document = dict[str, Any]
DUPLICATE_KEY = 11000
WRITE_CONFLICT = 112
# A command the user's role does not allow: MongoDB's Unauthorized, and Atlas's AtlasError
# for the same refusal.
UNAUTHORIZED = frozenset({13, 8000})
# The events' collection (MongoEventRecorder's default; tools that read it name it so).
EVENTS = "events"
# The `published` mark of a document the outbox cannot decode: out of its scan, kept.
UNDECODABLE = "undecodable"
LEASES = "outbox_lease"


class _MongoErrors(contextlib.AbstractContextManager[None]):
    # A plain class rather than @contextmanager: it wraps every MongoDB call, and a
    # generator per call is a cost of its own. Stateless, so one instance serves all.
    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, PyMongoError):
            # The type only: a driver message may quote a document.
            raise EventStoreUnavailable(f"MongoDB failed ({type(exc).__name__})") from exc


_MONGO_ERRORS = _MongoErrors()


def mongo_errors() -> contextlib.AbstractContextManager[None]:
    """MongoDB's failures as m8's: the one place they are translated."""
    return _MONGO_ERRORS


def unauthorized(exc: BaseException) -> bool:
    """Whether a failure (or the driver error behind an EventStoreUnavailable) is MongoDB
    refusing what the user's role does not allow."""
    cause = exc.__cause__ if isinstance(exc, EventStoreUnavailable) else exc
    return isinstance(cause, OperationFailure) and cause.code in UNAUTHORIZED


def _transaction_conflict(exc: PyMongoError) -> bool:
    return exc.has_error_label("TransientTransactionError") or _code(exc) == WRITE_CONFLICT


async def connect_database(uri: str, name: str) -> AsyncDatabase[Document]:
    """A database handle on a new client (the caller closes `db.client`)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    return client[name]


def to_document(event: StoredEvent) -> Document:
    """The MongoDB document of a stored event; `published: false` if the outbox publishes it."""
    doc: Document = {
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
    }
    if event.on_bus:
        doc["published"] = False
    return doc


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
        on_bus="published" in doc,
    )


class MongoRecords:
    """The records of one collection, in a unit of work's session or outside any."""

    def __init__(
        self, collection: AsyncCollection[Document], session: AsyncClientSession | None = None
    ) -> None:
        self.collection = collection
        self.session = session

    async def get(self, record_id: str) -> Record | None:
        with mongo_errors():
            return await self.collection.find_one({"_id": record_id}, session=self.session)

    async def insert(self, record: Mapping[str, Any]) -> None:
        try:
            with mongo_errors():
                await self.collection.insert_one(dict(record), session=self.session)
        except EventStoreUnavailable as exc:
            if isinstance(exc.__cause__, DuplicateKeyError):
                raise DuplicateRecord(self.collection.name, str(record["_id"])) from None
            raise

    async def delete(self, record_id: str) -> None:
        with mongo_errors():
            await self.collection.delete_one({"_id": record_id}, session=self.session)

    async def ids_due(self, field: str, until: datetime, limit: int) -> list[str]:
        with mongo_errors():
            cursor = (
                self.collection.find({field: {"$lte": until}}, {"_id": 1}, session=self.session)
                .sort(field, ASCENDING)
                .limit(limit)
            )
            return [str(doc["_id"]) async for doc in cursor]


class MongoUnitOfWork:
    """Appends and record writes in one MongoDB session's transaction."""

    def __init__(self, recorder: MongoEventRecorder, session: AsyncClientSession) -> None:
        self.recorder = recorder
        self.session = session

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
    ) -> list[StoredEvent]:
        return await self.recorder._append(
            aggregate_type, aggregate_id, expected_version, events, metadata, self.session
        )

    async def load(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        return await self.recorder._load(aggregate_type, aggregate_id, self.session)

    def records(self, collection: str) -> MongoRecords:
        return MongoRecords(self.recorder.collection(collection), self.session)


class MongoEventRecorder:
    """Events in one MongoDB collection, with the outbox flag beside each."""

    def __init__(self, db: AsyncDatabase[Document], collection: str = EVENTS) -> None:
        self.db = db
        self.events = db[collection]
        # Collection handles by name, made once: a handle holds no state of its own, and
        # making one (name checks, options) is a cost on every write otherwise.
        self._collections: dict[str, AsyncCollection[Document]] = {collection: self.events}

    def collection(self, name: str) -> AsyncCollection[Document]:
        """The handle of collection `name` in this recorder's database."""
        handle = self._collections.get(name)
        if handle is None:
            handle = self._collections[name] = self.db[name]
        return handle

    async def create_indexes(self) -> None:
        """Idempotent: the uniqueness that is the concurrency check, and the outbox's scan."""
        with mongo_errors():
            await self.events.create_index(
                [
                    ("aggregate_type", ASCENDING),
                    ("aggregate_id", ASCENDING),
                    ("version", ASCENDING),
                ],
                unique=True,
                name="aggregate_version",
            )
            await self.events.create_index(
                [("published", ASCENDING), ("_id", ASCENDING)], name="outbox"
            )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[MongoUnitOfWork]:
        """A unit of work: committed when the block ends, aborted if it raises.

        A write conflict with a concurrent transaction is raised as a ConcurrencyConflict
        (`TransactionConflict`): like a stale expected version, it means "decide again on
        fresh state".
        """
        try:
            async with (
                self.db.client.start_session() as session,
                await session.start_transaction(),
            ):
                yield MongoUnitOfWork(self, session)
        except EventStoreUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, PyMongoError) and _transaction_conflict(cause):
                raise TransactionConflict() from None
            raise
        except PyMongoError as exc:  # the commit or abort itself
            if _transaction_conflict(exc):
                raise TransactionConflict() from None
            raise EventStoreUnavailable(f"MongoDB failed ({type(exc).__name__})") from exc

    def records(self, collection: str) -> MongoRecords:
        return MongoRecords(self.collection(collection))

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
    ) -> list[StoredEvent]:
        """Records `events` after `expected_version`, all or none."""
        if len(events) == 1:
            return await self._append(
                aggregate_type, aggregate_id, expected_version, events, metadata
            )
        try:
            # Several events must land together, or a rival could slip in between.
            async with self.transaction() as unit:
                return await unit.append(
                    aggregate_type, aggregate_id, expected_version, events, metadata
                )
        except TransactionConflict:
            # Our own transaction for several events met a rival's.
            raise ConcurrencyConflict(aggregate_type, aggregate_id, expected_version) from None

    async def _append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        metadata: Metadata,
        session: AsyncClientSession | None = None,
    ) -> list[StoredEvent]:
        stored = [
            StoredEvent.new(aggregate_type, aggregate_id, expected_version + n, event, metadata)
            for n, event in enumerate(events, start=1)
        ]
        docs = [to_document(event) for event in stored]
        try:
            await self.events.insert_many(docs, ordered=True, session=session)
        except (DuplicateKeyError, BulkWriteError) as exc:
            if _is_duplicate(exc):
                raise ConcurrencyConflict(aggregate_type, aggregate_id, expected_version) from None
            raise EventStoreUnavailable(f"MongoDB failed ({type(exc).__name__})") from exc
        except OperationFailure as exc:
            # Inside a transaction a rival's insert shows as a write conflict instead.
            if exc.code == WRITE_CONFLICT:
                raise ConcurrencyConflict(aggregate_type, aggregate_id, expected_version) from None
            raise EventStoreUnavailable(f"MongoDB failed ({type(exc).__name__})") from exc
        except PyMongoError as exc:
            raise EventStoreUnavailable(f"MongoDB failed ({type(exc).__name__})") from exc
        return stored

    async def load(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        """One aggregate's events in version order (an index scan, never the whole store)."""
        return await self._load(aggregate_type, aggregate_id)

    async def _load(
        self, aggregate_type: str, aggregate_id: str, session: AsyncClientSession | None = None
    ) -> list[StoredEvent]:
        with mongo_errors():
            cursor = self.events.find(
                {"aggregate_type": aggregate_type, "aggregate_id": aggregate_id},
                session=session,
            ).sort("version", ASCENDING)
            # One call for the whole result rather than an await per document.
            return [from_document(doc) for doc in await cursor.to_list()]

    async def recorded(self, message: StoredEvent) -> tuple[StoredEvent, list[StoredEvent]]:
        """The event store's own copy of the event a message carries, and all the events of
        its aggregate (version order); NotRecorded if the aggregate has no event of that id.
        """
        events = await self.load(message.aggregate_type, message.aggregate_id)
        stored = next((e for e in events if e.event_id == message.event_id), None)
        if stored is None:
            raise NotRecorded(message)
        return stored, events

    async def read_all(
        self, after: str | None = None, aggregate_type: str | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Every event after position `after` (an event id), in id order (which is not
        commit order: see the port)."""
        query: Document = {}
        if after is not None:
            query["_id"] = {"$gt": ObjectId(after)}
        if aggregate_type is not None:
            query["aggregate_type"] = aggregate_type
        with mongo_errors():
            async for doc in self.events.find(query).sort("_id", ASCENDING).batch_size(1000):
                yield from_document(doc)

    async def aggregates(self, aggregate_type: str) -> AsyncIterator[tuple[str, list[StoredEvent]]]:
        """Every aggregate of a type with its events, in one pass over the version index."""
        cursor = (
            self.events.find({"aggregate_type": aggregate_type})
            .sort([("aggregate_id", ASCENDING), ("version", ASCENDING)])
            .batch_size(1000)
        )
        current: str | None = None
        events: list[StoredEvent] = []
        with mongo_errors():
            async for doc in cursor:
                if doc["aggregate_id"] != current and events:
                    yield current or "", events
                    events = []
                current = doc["aggregate_id"]
                events.append(from_document(doc))
        if events:
            yield current or "", events

    async def unpublished(
        self,
        limit: int,
        kinds: Sequence[EventSelector] | None = None,
        before: datetime | None = None,
    ) -> list[StoredEvent]:
        """The oldest events the relay has not yet seen confirmed by the broker; only
        those of `kinds` when given (a service's relay publishes only its own events), and
        only those made before `before` when given.

        A document that is no valid event (changed by hand, say) is set aside as
        `published: "undecodable"` and logged, so it cannot hold up the events behind it.
        """
        query: Document = {"published": False}
        if before is not None:
            # Event ids begin with the second they were made in (new_event_id).
            query["_id"] = {"$lt": ObjectId.from_datetime(before)}
        # One query per kind rather than one `$or`: each uses the outbox index, where an
        # `$or` may make the server scan every event.
        queries = [query] if kinds is None else [{**query, **_kind_query(k)} for k in kinds]
        found: list[Document] = []
        with mongo_errors():
            for each in queries:
                cursor = self.events.find(each).sort("_id", ASCENDING).limit(limit)
                found += [doc async for doc in cursor]
        events = []
        with mongo_errors():
            for doc in sorted(found, key=lambda d: str(d["_id"]))[:limit]:
                try:
                    events.append(_publishable(doc))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    await self.events.update_one(
                        {"_id": doc["_id"]}, {"$set": {"published": UNDECODABLE}}
                    )
                    log.error(
                        "undecodable event set aside, it will not be published: repair it and "
                        "set published to false, or delete it",
                        extra={
                            "event_id": str(doc["_id"]),
                            "problem": f"{type(exc).__name__}: {exc}",
                        },
                    )
        return events

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        """Notes that the broker confirmed these events."""
        with mongo_errors():
            await self.events.update_many(
                {"_id": {"$in": [ObjectId(i) for i in event_ids]}}, {"$set": {"published": True}}
            )

    async def published(
        self, aggregate_type: str, aggregate_id: str, event_type: str, data: Mapping[str, Any]
    ) -> bool:
        """Whether the broker confirmed the newest matching event (`published: true`): one
        query, newest first along the (aggregate_type, aggregate_id, version) index."""
        query: Document = {
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "type": event_type,
            **{f"data.{name}": value for name, value in data.items()},
        }
        with mongo_errors():
            doc = await self.events.find_one(
                query, {"published": 1}, sort=[("version", DESCENDING)]
            )
        return doc is not None and doc.get("published") is True

    async def redact(self, event_id: str, replacements: Mapping[str, Any]) -> bool:
        """Replaces fields of an event's data (the one sanctioned change to a stored event:
        dropping ciphertext once its key is destroyed). True if the event exists."""
        if not ObjectId.is_valid(event_id):
            return False
        updates = {f"data.{name}": value for name, value in replacements.items()}
        with mongo_errors():
            result = await self.events.update_many({"_id": ObjectId(event_id)}, {"$set": updates})
        return result.matched_count == 1

    async def hold_lease(
        self, lease_id: str, owner: str, now: datetime, until: datetime
    ) -> datetime | None:
        """Takes or renews a lease in `outbox_lease`, unless another owner holds it unexpired."""
        try:
            with mongo_errors():
                doc = await self.collection(LEASES).find_one_and_update(
                    {"_id": lease_id, "$or": [{"owner": owner}, {"until": {"$lt": now}}]},
                    {"$set": {"owner": owner, "until": until}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
        except EventStoreUnavailable as exc:
            if isinstance(exc.__cause__, DuplicateKeyError):  # another owner holds it
                return None
            raise
        return doc["until"] if doc else None

    async def write_read_model(self, name: str, record: Mapping[str, Any], version: int) -> None:
        """Replaces a read-model document unless a newer version is there already."""
        try:
            with mongo_errors():
                # Never let a slower worker with fewer events overwrite a newer state.
                await self.collection(name).replace_one(
                    {"_id": record["_id"], VERSION_FIELD: {"$lte": version}},
                    {**record, VERSION_FIELD: version},
                    upsert=True,
                )
        except EventStoreUnavailable as exc:
            if not isinstance(exc.__cause__, DuplicateKeyError):  # else: newer already
                raise

    async def clear_read_model(self, name: str) -> None:
        with mongo_errors():
            await self.db[name].delete_many({})


def _kind_query(kind: EventSelector) -> Document:
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
