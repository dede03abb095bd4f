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
from collections.abc import Sequence
from typing import Protocol

from m8.eventsourcing import EventRecorder, Record, StoredEvent
from m8.eventstore.mongo import VERSION_FIELD

__all__ = ["VERSION_FIELD", "Projection", "ProjectionRunner"]


class Projection(Protocol):
    """Turns one aggregate's events into read-model documents (each with an `_id`)."""

    name: str
    aggregate_type: str

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Record]:
        """The documents that represent this aggregate now."""
        ...


class ProjectionRunner:
    """Keeps projections up to date from events, and rebuilds them on demand."""

    def __init__(self, recorder: EventRecorder, projections: Sequence[Projection]) -> None:
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
        await self.recorder.clear_read_model(projection.name)
        count = 0
        async for aggregate_id, events in self.recorder.aggregates(projection.aggregate_type):
            await self._write(projection, aggregate_id, events)
            count += 1
        return count

    async def _write(
        self, projection: Projection, aggregate_id: str, events: Sequence[StoredEvent]
    ) -> None:
        if not events:
            return
        version = events[-1].version
        for record in projection.project(aggregate_id, events):
            await self.recorder.write_read_model(projection.name, record, version)
