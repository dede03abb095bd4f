"""What MongoDB and RabbitMQ themselves sustain, as ceilings for the pipeline (bench.e2e).

Each runs a fixed time at a given concurrency on scratch objects that it removes after:
MongoDB `insert_one` + `find_one` by _id of event documents (the API's upload request, the
largest of an upload's events) in a collection with the event store's indexes; RabbitMQ
confirmed publishes of persistent event messages to a quorum queue declared like m8's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from bench.documents import requested_event
from m8.devservices.system import VAULT_STORE
from m8.eventstore import MongoEventRecorder
from m8.eventstore.mongo import Document, from_document
from m8.messaging import QueueSpec
from m8.messaging.broker import event_message


async def rate_for(
    seconds: float, concurrency: int, work: Callable[[int], Awaitable[int]]
) -> float:
    """Operations per second: `concurrency` workers call `work(n)` (which says how many
    operations it made) with a fresh n each time, until `seconds` have passed."""
    numbers, done = itertools.count(), 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            made = await work(next(numbers))
            done += made  # not `done += await ...`: that adds to the count from before

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return done / (time.perf_counter() - started)


async def mongodb_ops_per_s(db: AsyncDatabase[Document], concurrency: int, seconds: float) -> float:
    """The server's rate of insert_one + find_one by _id of event documents."""
    scratch = MongoEventRecorder(db, collection=f"bench_ceiling_{uuid.uuid4().hex[:8]}")
    await scratch.create_indexes()
    template = requested_event(VAULT_STORE, "vault", "bench/ceiling")

    async def insert_and_find(n: int) -> int:
        doc = {**template, "_id": ObjectId(), "aggregate_id": f"{VAULT_STORE}:bench/ceiling/{n}"}
        await scratch.events.insert_one(doc)
        await scratch.events.find_one({"_id": doc["_id"]})
        return 2

    try:
        return await rate_for(seconds, concurrency, insert_and_find)
    finally:
        await scratch.events.drop()


async def rabbitmq_publishes_per_s(amqp_url: str, concurrency: int, seconds: float) -> float:
    """The broker's rate of confirmed publishes of persistent event messages to a quorum
    queue with m8's arguments, on one confirming channel as a relay publishes."""
    event = from_document(requested_event(VAULT_STORE, "vault", "bench/ceiling"))
    spec = QueueSpec(f"m8.bench.ceiling.{uuid.uuid4().hex[:8]}", ())
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": spec.name})
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments())

        async def publish(n: int) -> int:
            await channel.default_exchange.publish(
                event_message(event), routing_key=spec.name, mandatory=True
            )
            return 1

        try:
            return await rate_for(seconds, concurrency, publish)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
