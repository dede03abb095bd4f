"""Read models kept in their own collections, computed per aggregate.

A projection is a pure function from one aggregate's events to read-model documents.
On each event the runner reloads that aggregate's events (one index scan) and replaces
its documents, so applying an event twice, or events out of order, gives the same read
model: idempotent per event id by construction. Rebuilding walks the event store once.
Events of one aggregate that arrive while its documents are being recomputed share one
follow-up recomputation, which keeps bursts cheap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from m8.eventsourcing import StoredEvent
from m8.eventstore.mongo import Document, MongoEventRecorder, from_document

log = logging.getLogger(__name__)
VERSION_FIELD = "_aggregate_version"


class Projection(Protocol):
    """Turns one aggregate's events into read-model documents (each with an `_id`)."""

    name: str
    aggregate_type: str

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
        """The documents that represent this aggregate now."""
        ...


class ProjectionRunner:
    """Keeps projections up to date from events, and rebuilds them on demand."""

    def __init__(self, recorder: MongoEventRecorder, projections: Sequence[Projection]) -> None:
        self.recorder = recorder
        self.projections = list(projections)
        self._running: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._next: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def handle(self, event: StoredEvent) -> None:
        """Brings every projection of the event's aggregate type up to date.

        Returns once a recomputation that started after this call has finished, so the
        event (stored before it was published) is reflected when the caller acks it.
        """
        if not any(p.aggregate_type == event.aggregate_type for p in self.projections):
            return
        key = (event.aggregate_type, event.aggregate_id)
        if key not in self._running:
            await self._run(key)
            return
        follow_up = self._next.get(key)
        if follow_up is None:
            follow_up = self._next[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._running[key])  # one at a time per aggregate
            del self._next[key]
            try:
                await self._run(key)
            except Exception as exc:
                follow_up.set_exception(exc)
                raise
            follow_up.set_result(None)
        else:
            await asyncio.shield(follow_up)

    async def _run(self, key: tuple[str, str]) -> None:
        done = self._running[key] = asyncio.get_running_loop().create_future()
        try:
            aggregate_type, aggregate_id = key
            events = await self.recorder.load(aggregate_type, aggregate_id)
            for projection in self.projections:
                if projection.aggregate_type == aggregate_type:
                    await self._write(projection, aggregate_id, events)
        finally:
            if self._running.get(key) is done:
                del self._running[key]
            done.set_result(None)

    async def rebuild(self, projection: Projection) -> int:
        """Recomputes a read model from the event store; returns how many aggregates."""
        collection = self.recorder.db[projection.name]
        await collection.delete_many({})
        count = 0
        async for aggregate_id, events in self._aggregates(projection.aggregate_type):
            await self._write(projection, aggregate_id, events)
            count += 1
        return count

    async def _aggregates(
        self, aggregate_type: str
    ) -> AsyncIterator[tuple[str, list[StoredEvent]]]:
        # The (type, id, version) index gives each aggregate's events together, in order.
        cursor = (
            self.recorder.events.find({"aggregate_type": aggregate_type})
            .sort([("aggregate_id", ASCENDING), ("version", ASCENDING)])
            .batch_size(1000)
        )
        current: str | None = None
        events: list[StoredEvent] = []
        async for doc in cursor:
            if doc["aggregate_id"] != current and events:
                yield current or "", events
                events = []
            current = doc["aggregate_id"]
            events.append(from_document(doc))
        if events:
            yield current or "", events

    async def _write(
        self, projection: Projection, aggregate_id: str, events: Sequence[StoredEvent]
    ) -> None:
        if not events:
            return
        version = events[-1].version
        collection = self.recorder.db[projection.name]
        for doc in projection.project(aggregate_id, events):
            stamped: dict[str, Any] = {**doc, VERSION_FIELD: version}
            try:
                # Never let a slower worker with fewer events overwrite a newer state.
                await collection.replace_one(
                    {"_id": doc["_id"], VERSION_FIELD: {"$lte": version}}, stamped, upsert=True
                )
            except DuplicateKeyError:
                log.debug("read model already newer", extra={"projection": projection.name})
