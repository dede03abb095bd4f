"""The outbox: every stored event that goes to the bus reaches consumers, pushed right
after its commit, and published by the backstop after relay crashes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from bson import ObjectId

from m8.devservices import Services
from m8.domain.events import UploadKeyClaimed
from m8.eventstore import MongoEventRecorder, MongoInbox, OutboxRelay
from m8.eventstore.mongo import UNDECODABLE
from m8.messaging import Broker as AmqpBroker
from m8.messaging import EventConsumer, QueueSpec
from m8.messaging.topology import API_PROJECTIONS_QUEUE
from tests.servers import Broker
from tests.support.events import METADATA, Received, SampleHappened, eventually

SPEC = QueueSpec("m8.test.outbox", ("test.#",))


@pytest.fixture
async def received(amqp: AmqpBroker, inbox: MongoInbox) -> AsyncIterator[Received]:
    seen = Received()
    consumer = EventConsumer(amqp, SPEC, seen.handler, inbox, concurrency=8)
    await consumer.start()
    yield seen
    await consumer.stop()


async def _append(recorder: MongoEventRecorder, count: int, prefix: str = "agg") -> list[str]:
    ids = []
    for n in range(count):
        ids += [
            e.event_id
            for e in await recorder.append("test", f"{prefix}{n}", 0, [SampleHappened(n)], METADATA)
        ]
    return ids


async def test_the_backstop_publishes_every_event_left_unpublished_and_marks_it(
    recorder: MongoEventRecorder, amqp: AmqpBroker, received: Received
) -> None:
    ids = await _append(recorder, 30)
    relay = OutboxRelay(recorder, amqp, owner="relay-1", batch=7, grace=0)
    task = asyncio.create_task(relay.run())
    try:
        await received.wait_for(30)
        await eventually(lambda: _published_at_least(recorder, 30))
    finally:
        task.cancel()
    assert set(received.ids) == set(ids)


async def test_killed_relay_loses_nothing_and_consumers_see_each_event_once(
    recorder: MongoEventRecorder,
    amqp: AmqpBroker,
    received: Received,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
) -> None:
    ids = await _append(recorder, 120)
    env = {
        **os.environ,
        "M8_AMQP_URL": broker.url,
        "M8_MONGODB_URI": services["mongodb"].url,
        "M8_MONGODB_DATABASE": mongo_db_name,
    }
    relay_process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.relay_process", env=env
    )
    # Kill it hard once it is part-way through: some events published, some not.
    await eventually(lambda: _published_at_least(recorder, 20))
    relay_process.send_signal(signal.SIGKILL)
    await relay_process.wait()
    assert await recorder.events.count_documents({"published": False}) > 0

    relay = OutboxRelay(recorder, amqp, owner="relay-after-crash", lease_seconds=1, grace=0)
    task = asyncio.create_task(relay.run())
    try:
        await received.wait_for(len(ids))
        await eventually(lambda: _published_at_least(recorder, len(ids)))
    finally:
        task.cancel()
    assert set(received.ids) == set(ids)
    assert received.duplicates() == []  # the inbox absorbed any republished event


async def test_only_the_lease_holder_publishes(
    recorder: MongoEventRecorder, amqp: AmqpBroker, received: Received
) -> None:
    first = OutboxRelay(recorder, amqp, owner="first")
    second = OutboxRelay(recorder, amqp, owner="second")
    assert await first._hold_lease()
    assert not await second._hold_lease()


async def test_each_services_relays_share_a_lease_of_their_own(
    recorder: MongoEventRecorder, amqp: AmqpBroker
) -> None:
    api = OutboxRelay(recorder, amqp, owner="api-1", service="api")
    another_api = OutboxRelay(recorder, amqp, owner="api-2", service="api")
    rotator = OutboxRelay(recorder, amqp, owner="rotator-1", service="keyrotator")
    assert await api._hold_lease()
    assert not await another_api._hold_lease()
    assert await rotator._hold_lease()  # one service's relay never waits for another's
    leases = {doc["_id"] async for doc in recorder.db["outbox_lease"].find()}
    assert leases == {"outbox:api", "outbox:keyrotator"}


async def _published_at_least(recorder: MongoEventRecorder, count: int) -> bool:
    return await recorder.events.count_documents({"published": True}) >= count


async def test_event_stored_before_its_consumer_ever_ran_waits_in_the_queue(
    recorder: MongoEventRecorder, amqp: AmqpBroker, inbox: MongoInbox
) -> None:
    [event] = await recorder.append("test", "early", 0, [SampleHappened(1)], METADATA)
    relay = OutboxRelay(recorder, amqp, owner="early")
    assert await relay.publish_pending() == 1

    received = Received()
    consumer = EventConsumer(amqp, API_PROJECTIONS_QUEUE, received.handler, inbox)
    await consumer.start()  # starts only now, after the event was published
    await received.wait_for(1)
    await consumer.stop()
    assert received.ids == [event.event_id]


async def test_event_no_queue_takes_stays_unpublished(
    recorder: MongoEventRecorder, amqp: AmqpBroker
) -> None:
    channel = await amqp.channel()
    await channel.queue_delete(API_PROJECTIONS_QUEUE.name)  # nobody binds "#" any more
    [event] = await recorder.append("nobody", "x", 0, [SampleHappened(1)], METADATA)
    relay = OutboxRelay(recorder, amqp, owner="unroutable")
    assert await relay.publish_pending() == 0
    assert [e.event_id for e in await recorder.unpublished(10)] == [event.event_id]


async def test_an_undecodable_event_is_set_aside_and_the_events_around_it_still_arrive(
    recorder: MongoEventRecorder,
    amqp: AmqpBroker,
    received: Received,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = await _append(recorder, 2, prefix="before")
    broken = [ObjectId(), ObjectId()]
    # Edited by hand: one without metadata, one whose data is no JSON object.
    await recorder.events.insert_many(
        [
            {"_id": broken[0], "aggregate_type": "test", "type": "X", "published": False},
            {
                "_id": broken[1],
                "aggregate_type": "test",
                "aggregate_id": "b",
                "version": 1,
                "type": "SampleHappened",
                "type_version": 1,
                "data": "not an object",
                "metadata": {"actor": "a", "correlation_id": "c"},
                "recorded_at": "yesterday",
                "published": False,
            },
        ]
    )
    after = await _append(recorder, 2, prefix="after")
    relay = OutboxRelay(recorder, amqp, owner="through-junk", batch=3, grace=0)

    async def nothing_left() -> bool:
        return await recorder.unpublished(10) == []

    task = asyncio.create_task(relay.run())
    try:
        await received.wait_for(4)
        # A consumer may see an event before the relay has marked it published.
        await eventually(nothing_left, timeout=60)
    finally:
        task.cancel()

    assert sorted(received.ids) == sorted(before + after)
    marks = {d["_id"]: d["published"] async for d in recorder.events.find({"_id": {"$in": broken}})}
    assert marks == {broken[0]: UNDECODABLE, broken[1]: UNDECODABLE}
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert {getattr(r, "event_id", None) for r in logged} >= {str(i) for i in broken}


async def test_events_are_pushed_right_after_their_commit_without_the_lease(
    recorder: MongoEventRecorder, amqp: AmqpBroker, received: Received
) -> None:
    # Another replica holds the lease, and this relay's backstop would wait an hour: only
    # the push can deliver the event.
    holder = OutboxRelay(recorder, amqp, owner="holder")
    assert await holder._hold_lease()
    relay = OutboxRelay(recorder, amqp, owner="appender", grace=3600)
    task = asyncio.create_task(relay.run())
    try:
        events = await recorder.append("test", "pushed", 0, [SampleHappened(3)], METADATA)
        relay.submit(events)  # as Repository(on_append=relay.submit) does after a commit
        await received.wait_for(1)
        await eventually(lambda: _published_at_least(recorder, 1))
    finally:
        task.cancel()
    assert received.ids == [events[0].event_id]


async def test_an_event_no_consumer_acts_on_is_stored_but_never_published(
    recorder: MongoEventRecorder, amqp: AmqpBroker
) -> None:
    [claimed] = await recorder.append(
        "upload_key", "k", 0, [UploadKeyClaimed(key_id="k", upload_id="u")], METADATA
    )
    relay = OutboxRelay(recorder, amqp, owner="quiet")
    relay.submit([claimed])
    assert await relay.push_submitted() == 0
    assert await relay.publish_pending() == 0
    doc = await recorder.events.find_one({"_id": ObjectId(claimed.event_id)})
    assert doc is not None
    assert "published" not in doc
