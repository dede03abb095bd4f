"""What m8 relies on from RabbitMQ, shown against the real broker."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import FieldTable

from tests.servers import Broker

QUORUM: FieldTable = {"x-queue-type": "quorum"}


async def _get(queue: aio_pika.abc.AbstractQueue) -> AbstractIncomingMessage:
    """The next message of `queue`, waiting up to ten seconds for it."""
    async with asyncio.timeout(10):
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.05)


async def test_confirmed_publish_to_a_quorum_queue_is_delivered(broker: Broker) -> None:
    async with await aio_pika.connect(broker.url) as conn:
        channel = await conn.channel(publisher_confirms=True)
        queue = await channel.declare_queue("q.confirm", durable=True, arguments=QUORUM)
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(b"hello", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name,
        )
        assert confirmation is not None  # the broker confirmed (aio-pika raises on nack)
        message = await _get(queue)
        assert message.body == b"hello"
        await message.ack()


async def test_unacked_message_is_redelivered_after_its_consumer_dies(broker: Broker) -> None:
    async with await aio_pika.connect(broker.url) as conn:
        channel = await conn.channel()
        queue = await channel.declare_queue("q.redeliver", durable=True, arguments=QUORUM)
        await channel.default_exchange.publish(aio_pika.Message(b"job"), routing_key=queue.name)

    dying = await aio_pika.connect(broker.url)
    first = await _get(await (await dying.channel()).get_queue("q.redeliver"))
    assert first.body == b"job"
    assert not first.redelivered
    await dying.close()  # dies without acking

    async with await aio_pika.connect(broker.url) as conn:
        again = await _get(await (await conn.channel()).get_queue("q.redeliver"))
        assert again.body == b"job"
        assert again.redelivered
        await again.ack()


async def test_message_past_the_delivery_limit_is_dead_lettered(broker: Broker) -> None:
    async with await aio_pika.connect(broker.url) as conn:
        channel = await conn.channel()
        dlx = await channel.declare_exchange("dlx", aio_pika.ExchangeType.TOPIC, durable=True)
        dead = await channel.declare_queue("dead.q", durable=True, arguments=QUORUM)
        await dead.bind(dlx, routing_key="#")
        queue = await channel.declare_queue(
            "q.limited",
            durable=True,
            arguments={
                **QUORUM,
                "x-delivery-limit": 2,
                "x-dead-letter-exchange": "dlx",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        await channel.default_exchange.publish(aio_pika.Message(b"poison"), routing_key=queue.name)
        for _ in range(3):  # the first delivery and two redeliveries
            message = await _get(queue)
            await message.nack(requeue=True)

        corpse = await _get(dead)
        assert corpse.body == b"poison"
        assert corpse.headers["x-first-death-reason"] == "delivery_limit"
        assert corpse.headers["x-first-death-queue"] == "q.limited"
        await corpse.ack()
        assert await queue.get(fail=False) is None
