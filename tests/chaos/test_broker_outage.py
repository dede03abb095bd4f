"""RabbitMQ goes away while events flow: nothing is lost, nobody needs a hand.

Closing connections touches only the test's own virtual host; the restart stops a node of
the test's own (tests/support/rabbitmq_node.py), never the machine's RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from m8.eventstore import MongoEventRecorder, MongoInbox, OutboxRelay
from m8.messaging import Broker as AmqpBroker
from m8.messaging import EventConsumer, QueueSpec
from tests.servers import Broker
from tests.support.events import METADATA, Received, SampleHappened, eventually
from tests.support.rabbitmq_node import RabbitNode, rabbitmq_node

SPEC = QueueSpec("m8.test.chaos", ("test.#",))
EVENTS = 150


def rabbitmqctl(*args: str) -> None:
    """Only for what touches nothing but the test's own virtual host."""
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


Flowing = tuple[Received, Callable[[], asyncio.Task[list[str]]]]


@contextlib.asynccontextmanager
async def events_flowing(
    recorder: MongoEventRecorder, inbox: MongoInbox, amqp: AmqpBroker
) -> AsyncIterator[Flowing]:
    """A consumer and a relay running; the test starts the appender when it likes."""
    received = Received()
    consumer = EventConsumer(amqp, SPEC, received.handler, inbox, concurrency=8)
    await consumer.start()
    # What the broker did not confirm during the outage, the backstop sends a second on.
    relay = OutboxRelay(recorder, amqp, owner="chaos", batch=20, grace=1)
    relay_task = asyncio.create_task(relay.run())

    async def append_slowly() -> list[str]:
        ids = []
        for n in range(EVENTS):
            events = await recorder.append("test", f"c{n}", 0, [SampleHappened(n)], METADATA)
            ids.append(events[0].event_id)
            relay.submit(events)
            await asyncio.sleep(0.02)
        return ids

    try:
        yield received, lambda: asyncio.create_task(append_slowly())
    finally:
        relay_task.cancel()
        await consumer.stop()


@pytest.fixture
async def flowing(
    recorder: MongoEventRecorder, inbox: MongoInbox, amqp: AmqpBroker
) -> AsyncIterator[Flowing]:
    """Events flowing through a virtual host of the machine's RabbitMQ."""
    async with events_flowing(recorder, inbox, amqp) as flow:
        yield flow


@pytest.fixture
def own_node() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test's own: the one it may stop."""
    with rabbitmq_node() as node:
        yield node


async def _all_arrive(
    recorder: MongoEventRecorder, received: Received, appender: asyncio.Task[list[str]]
) -> None:
    ids = await appender
    await received.wait_for(len(ids), timeout=120)
    assert set(received.ids) == set(ids)
    assert received.duplicates() == []
    await eventually(lambda: _none_unpublished(recorder), timeout=60)


async def _none_unpublished(recorder: MongoEventRecorder) -> bool:
    return await recorder.events.count_documents({"published": False}) == 0


async def test_connections_closed_by_the_broker_lose_no_event(
    recorder: MongoEventRecorder,
    broker: Broker,
    flowing: tuple[Received, Callable[[], asyncio.Task[list[str]]]],
) -> None:
    received, start = flowing
    appender = start()
    for _ in range(2):
        await received.wait_for(len(set(received.ids)) + 20)
        await asyncio.to_thread(
            rabbitmqctl, "close_all_connections", "--vhost", broker.name, "chaos test"
        )
    await _all_arrive(recorder, received, appender)


async def test_broker_restart_loses_no_event(
    recorder: MongoEventRecorder, inbox: MongoInbox, own_node: RabbitNode
) -> None:
    amqp = await AmqpBroker.connect(own_node.url, name="chaos")
    try:
        async with events_flowing(recorder, inbox, amqp) as (received, start):
            appender = start()
            await received.wait_for(30)
            try:
                await asyncio.to_thread(own_node.stop_app)
                await asyncio.sleep(2)  # the outage: events keep being stored meanwhile
            finally:
                await asyncio.to_thread(own_node.start_app)
            await _all_arrive(recorder, received, appender)
    finally:
        await amqp.close()
