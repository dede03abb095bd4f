"""Consumers, dead-lettering and RPC on the real RabbitMQ."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from pymongo import AsyncMongoClient

from m8.devservices import Services
from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder, MongoInbox
from m8.messaging import (
    Broker as AmqpBroker,
)
from m8.messaging import (
    EventConsumer,
    PoisonMessage,
    QueueSpec,
    RpcClient,
    RpcError,
    RpcServer,
    RpcTimeout,
)
from tests.servers import Broker
from tests.support.events import METADATA, Received, SampleHappened

SPEC = QueueSpec("m8.test.work", ("test.#",), delivery_limit=2)


async def _publish_one(recorder: MongoEventRecorder, amqp: AmqpBroker) -> StoredEvent:
    [event] = await recorder.append("test", "agg", 0, [SampleHappened(1)], METADATA)
    await amqp.publish_event(event)
    return event


async def _dead_letter(amqp: AmqpBroker, spec: QueueSpec) -> aio_pika.abc.AbstractIncomingMessage:
    channel = await amqp.channel()
    dead = await channel.get_queue(spec.dead_letter_queue)
    async with asyncio.timeout(20):
        while (message := await dead.get(fail=False)) is None:
            await asyncio.sleep(0.1)
    await message.ack()
    return message


async def test_event_of_a_consumer_that_dies_before_ack_goes_to_another(
    recorder: MongoEventRecorder, inbox: MongoInbox, broker: Broker, amqp: AmqpBroker
) -> None:
    started = asyncio.Event()

    async def hang(_event: StoredEvent) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes: the process "dies" mid-work

    dying_connection = await AmqpBroker.connect(broker.url, name="dying")
    dying = EventConsumer(dying_connection, SPEC, hang, inbox)
    await dying.start()
    event = await _publish_one(recorder, amqp)
    async with asyncio.timeout(10):
        await started.wait()
    await dying_connection.close()

    survivor = Received()
    consumer = EventConsumer(amqp, SPEC, survivor.handler, inbox)
    await consumer.start()
    await survivor.wait_for(1)
    await consumer.stop()
    assert survivor.ids == [event.event_id]


async def test_poison_event_is_dead_lettered_at_once_with_the_reason(
    recorder: MongoEventRecorder, inbox: MongoInbox, amqp: AmqpBroker
) -> None:
    calls = 0

    async def refuse(_event: StoredEvent) -> None:
        nonlocal calls
        calls += 1
        raise PoisonMessage("cannot ever handle this")

    consumer = EventConsumer(amqp, SPEC, refuse, inbox)
    await consumer.start()
    event = await _publish_one(recorder, amqp)
    dead = await _dead_letter(amqp, SPEC)
    await consumer.stop()
    assert dead.message_id == event.event_id
    assert dead.headers["x-first-death-reason"] == "rejected"
    assert dead.headers["x-first-death-queue"] == SPEC.name
    assert calls == 1


async def test_event_failing_every_time_is_dead_lettered_after_the_delivery_limit(
    recorder: MongoEventRecorder, inbox: MongoInbox, amqp: AmqpBroker
) -> None:
    calls = 0

    async def fail(_event: StoredEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("upstream exploded")

    consumer = EventConsumer(amqp, SPEC, fail, inbox, attempts=1)
    await consumer.start()
    event = await _publish_one(recorder, amqp)
    dead = await _dead_letter(amqp, SPEC)
    await consumer.stop()
    assert dead.message_id == event.event_id
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert calls == SPEC.delivery_limit + 1


async def test_undecodable_message_is_dead_lettered(inbox: MongoInbox, amqp: AmqpBroker) -> None:
    received = Received()
    consumer = EventConsumer(amqp, SPEC, received.handler, inbox)
    await consumer.start()
    channel = await amqp.channel()
    exchange = await channel.get_exchange("m8.events")
    await exchange.publish(aio_pika.Message(b"{not json", message_id="junk"), "test.junk")
    dead = await _dead_letter(amqp, SPEC)
    await consumer.stop()
    assert dead.message_id == "junk"
    assert received.ids == []


async def test_redelivered_event_already_handled_is_not_handled_again(
    recorder: MongoEventRecorder, inbox: MongoInbox, amqp: AmqpBroker
) -> None:
    received = Received()
    consumer = EventConsumer(amqp, SPEC, received.handler, inbox)
    await consumer.start()
    event = await _publish_one(recorder, amqp)
    await received.wait_for(1)
    await amqp.publish_event(event)  # the relay republishes after an unknown outcome
    await amqp.publish_event(await _publish_one_more(recorder))
    await received.wait_for(2)
    await consumer.stop()
    assert received.duplicates() == []


async def _publish_one_more(recorder: MongoEventRecorder) -> StoredEvent:
    [event] = await recorder.append("test", "other", 0, [SampleHappened(2)], METADATA)
    return event


async def test_events_whose_inbox_fails_are_requeued_and_never_stall_the_consumer(
    recorder: MongoEventRecorder, amqp: AmqpBroker, services: Services, mongo_db_name: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(services["mongodb"].url)
    await client.close()  # the inbox's database is out of reach: every look-up fails
    received = Received()
    # One message at a time: one left unsettled would stop the consumer for good.
    consumer = EventConsumer(
        amqp, SPEC, received.handler, MongoInbox(client[mongo_db_name]), concurrency=1
    )
    await consumer.start()
    first = await _publish_one(recorder, amqp)
    second = await _publish_one_more(recorder)
    await amqp.publish_event(second)

    dead = [await _dead_letter(amqp, SPEC), await _dead_letter(amqp, SPEC)]
    await consumer.stop()

    assert {m.message_id for m in dead} == {first.event_id, second.event_id}
    assert [m.headers["x-first-death-reason"] for m in dead] == ["delivery_limit"] * 2
    assert received.ids == []


@pytest.fixture
async def rpc(amqp: AmqpBroker) -> RpcClient:
    async def echo(params: dict[str, Any]) -> dict[str, Any]:
        if params.get("fail"):
            raise RpcError("unknown_store", "no store named 'x'")
        if params.get("slow"):
            await asyncio.sleep(5)
        return {"echo": params["text"]}

    server = RpcServer(amqp, "m8.rpc.test", {"echo": echo})
    await server.start()
    client = RpcClient(amqp)
    await client.start()
    return client


async def test_rpc_call_returns_the_result(rpc: RpcClient) -> None:
    calls = [rpc.call("m8.rpc.test", "echo", {"text": f"hi {n}"}) for n in range(5)]
    assert await asyncio.gather(*calls) == [{"echo": f"hi {n}"} for n in range(5)]


async def test_rpc_error_reaches_the_caller_with_its_code(rpc: RpcClient) -> None:
    with pytest.raises(RpcError) as failure:
        await rpc.call("m8.rpc.test", "echo", {"fail": True})
    assert failure.value.code == "unknown_store"


async def test_rpc_unknown_procedure_is_a_bad_request(rpc: RpcClient) -> None:
    with pytest.raises(RpcError) as failure:
        await rpc.call("m8.rpc.test", "nope", {})
    assert failure.value.code == "bad_request"


async def test_rpc_without_answer_times_out(rpc: RpcClient) -> None:
    with pytest.raises(RpcTimeout):
        await rpc.call("m8.rpc.test", "echo", {"slow": True}, timeout=0.5)
    with pytest.raises(RpcTimeout):
        await rpc.call("m8.rpc.nobody-serves-this", "echo", {}, timeout=0.5)


async def test_stopping_an_rpc_server_answers_the_requests_in_hand(amqp: AmqpBroker) -> None:
    started = asyncio.Event()

    async def slow(params: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(0.5)
        return {"done": params["n"]}

    server = RpcServer(amqp, "m8.rpc.stopping", {"slow": slow})
    await server.start()
    client = RpcClient(amqp)
    await client.start()
    call = asyncio.create_task(client.call("m8.rpc.stopping", "slow", {"n": 1}, timeout=10))
    await started.wait()
    await server.stop()
    assert await call == {"done": 1}
    with pytest.raises(RpcTimeout):  # stopped: it takes no new request
        await client.call("m8.rpc.stopping", "slow", {"n": 2}, timeout=1)
