"""Read models: live updates through the broker equal a rebuild from the event store."""

from __future__ import annotations

import asyncio

import pytest

from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder, OutboxRelay, ProjectionRunner
from m8.messaging import Broker as AmqpBroker
from m8.messaging import EventConsumer, QueueSpec
from tests.support.events import METADATA, SampleHappened, SumProjection, eventually

AGGREGATES = 1_000
EVENTS_EACH = 10


@pytest.mark.scale
async def test_rebuilding_from_ten_thousand_events_equals_the_live_read_model(
    recorder: MongoEventRecorder, amqp: AmqpBroker
) -> None:
    projection = SumProjection()
    runner = ProjectionRunner(recorder, [projection])
    handled = 0

    async def handle(event: StoredEvent) -> None:
        nonlocal handled
        await runner.handle(event)
        handled += 1

    # No inbox: a projection is idempotent by construction.
    consumer = EventConsumer(
        amqp, QueueSpec("m8.test.projections", ("test.#",)), handle, None, concurrency=16
    )
    await consumer.start()
    relay = OutboxRelay(recorder, amqp, owner="projections", batch=500)
    relay_task = asyncio.create_task(relay.run())
    limit = asyncio.Semaphore(8)

    async def write(n: int) -> None:
        async with limit:
            events = [SampleHappened(n * EVENTS_EACH + i) for i in range(EVENTS_EACH)]
            await recorder.append("test", f"agg{n:04}", 0, events, METADATA)

    await asyncio.gather(*(write(n) for n in range(AGGREGATES)))

    async def all_handled() -> bool:
        return handled >= AGGREGATES * EVENTS_EACH

    await eventually(all_handled, timeout=600)
    relay_task.cancel()
    await consumer.stop()
    read_model = recorder.db[projection.name]
    live = await read_model.find({}, {"_aggregate_version": 0}).sort("_id").to_list()

    rebuilt_count = await runner.rebuild(projection)
    rebuilt = await read_model.find({}, {"_aggregate_version": 0}).sort("_id").to_list()

    assert rebuilt_count == AGGREGATES
    assert len(live) == AGGREGATES
    assert live == rebuilt
    total = AGGREGATES * EVENTS_EACH
    assert sum(doc["total"] for doc in rebuilt) == total * (total - 1) // 2
