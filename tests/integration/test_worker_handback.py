"""What a stopping worker does with the messages in hand, on the real RabbitMQ: an event
goes back to its queue as a fresh copy, or as itself if the broker does not take the
copy (never lost); an RPC request whose caller gave up is dropped. A handler that says
`NotNow` gets the same fresh copy, however often."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage

from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.messaging import EventConsumer, NotNow, QueueSpec, RpcClient, RpcServer, RpcTimeout
from m8.messaging.consumer import HANDED_BACK_HEADER
from m8.messaging.topology import HANDBACK_EXCHANGE
from tests.support.events import METADATA, SampleHappened

SPEC = QueueSpec("m8.test.handback", ("test.#",), delivery_limit=2)
HANG = asyncio.Event()  # never set: what a handler waits for that does not end in time


async def _in_hand_at_stop(
    amqp: AmqpBroker, recorder: MongoEventRecorder, before_stop: Any = None
) -> StoredEvent:
    """Publishes an event, lets a consumer take it and stops the consumer with it in hand."""
    started = asyncio.Event()

    async def hang(_event: StoredEvent) -> None:
        started.set()
        await HANG.wait()

    consumer = EventConsumer(amqp, SPEC, hang, inbox=None)
    await consumer.start()
    [event] = await recorder.append("test", "agg", 0, [SampleHappened(1)], METADATA)
    await amqp.publish_event(event)
    async with asyncio.timeout(20):
        await started.wait()
    if before_stop is not None:
        await before_stop()
    await consumer.stop(grace=0)
    return event


async def _next_on_queue(amqp: AmqpBroker) -> AbstractIncomingMessage:
    channel = await amqp.channel()
    queue = await channel.get_queue(SPEC.name)
    async with asyncio.timeout(20):
        while (message := await queue.get(fail=False)) is None:
            await asyncio.sleep(0.1)
    await message.ack()
    return message


async def test_an_event_in_hand_at_stop_goes_back_as_a_copy_whose_count_starts_afresh(
    amqp: AmqpBroker, recorder: MongoEventRecorder
) -> None:
    event = await _in_hand_at_stop(amqp, recorder)

    back = await _next_on_queue(amqp)
    assert back.message_id == event.event_id
    assert back.headers[HANDED_BACK_HEADER] == 1
    assert not back.redelivered
    assert back.headers.get("x-delivery-count", 0) == 0  # not counted


async def test_an_event_put_off_more_often_than_the_delivery_limit_is_handled_not_dead_lettered(
    amqp: AmqpBroker, recorder: MongoEventRecorder
) -> None:
    put_off = SPEC.delivery_limit + 3
    seen: list[StoredEvent] = []
    handled = asyncio.Event()

    async def not_yet(event: StoredEvent) -> None:
        seen.append(event)
        if len(seen) <= put_off:
            raise NotNow("another holds what it needs")
        handled.set()

    consumer = EventConsumer(amqp, SPEC, not_yet, inbox=None)
    await consumer.start()
    try:
        [event] = await recorder.append("test", "agg", 0, [SampleHappened(1)], METADATA)
        await amqp.publish_event(event)
        async with asyncio.timeout(30):
            await handled.wait()
    finally:
        await consumer.stop()

    assert [e.event_id for e in seen] == [event.event_id] * (put_off + 1)
    channel = await amqp.channel()
    for name in (SPEC.name, SPEC.dead_letter_queue):  # nothing left, nothing dead-lettered
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result.message_count == 0, name


async def test_an_event_whose_copy_no_queue_takes_goes_back_as_itself_not_lost(
    amqp: AmqpBroker, recorder: MongoEventRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="m8.messaging.consumer")

    async def unbind_from_handback() -> None:
        # As on a broker whose definitions predate m8.handback's binding for this queue.
        channel = await amqp.channel()
        queue = await channel.get_queue(SPEC.name)
        await queue.unbind(HANDBACK_EXCHANGE, routing_key=SPEC.name)
        await channel.close()

    event = await _in_hand_at_stop(amqp, recorder, unbind_from_handback)

    back = await _next_on_queue(amqp)
    assert back.message_id == event.event_id
    assert back.redelivered
    assert HANDED_BACK_HEADER not in (back.headers or {})
    assert back.headers["x-delivery-count"] == 1  # counted against the limit, but back
    assert "did not take a handed-back copy" in caplog.text


async def test_an_rpc_request_in_hand_at_stop_is_dropped_not_answered_by_the_next_server(
    amqp: AmqpBroker,
) -> None:
    started = asyncio.Event()
    later: list[dict[str, Any]] = []

    async def hang(_params: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await HANG.wait()
        return {}

    async def answer(params: dict[str, Any]) -> dict[str, Any]:
        later.append(params)
        return {"answered": True}

    stopping = RpcServer(amqp, "m8.rpc.handback", {"p": hang})
    await stopping.start()
    client = RpcClient(amqp)
    await client.start()
    call = asyncio.create_task(client.call("m8.rpc.handback", "p", {"n": 1}, timeout=5))
    async with asyncio.timeout(20):
        await started.wait()
    await stopping.stop(grace=0)
    successor = RpcServer(amqp, "m8.rpc.handback", {"p": answer})
    await successor.start()

    with pytest.raises(RpcTimeout):
        await call
    assert await client.call("m8.rpc.handback", "p", {"n": 2}) == {"answered": True}
    await successor.stop()
    assert later == [{"n": 2}]
