"""examples/consumer.py, run as a consumer outside m8 would run it, on a broker user of the
consumer kind: it receives what m8 publishes, and its user may read and bind, never publish."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.messaging.broker import event_message
from m8.messaging.topology import EVENTS_EXCHANGE, reactor_queue, store_types
from tests.servers import Broker
from tests.support.bus import METADATA, consumer_url, publish_as_m8, secret_events

EXAMPLE = Path(__file__).parents[2] / "examples" / "consumer.py"


@pytest.fixture
async def consumer(broker: Broker) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await aio_pika.connect(consumer_url(broker, "audit"))
    yield connection
    await connection.close()


async def test_the_example_consumer_prints_the_outcomes_m8_publishes(
    broker: Broker, recorder: MongoEventRecorder
) -> None:
    env = {**os.environ, "M8_CONSUMER_URL": _consumer_made_by_the_command(broker, "audit")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        async with asyncio.timeout(60):
            ready = await process.stderr.readline()
        assert b"listening on consumer.audit" in ready, (
            ready + await process.stderr.read()
        ).decode()
        await publish_as_m8(broker, recorder)
        expected = {
            f"{kind} {store_type}-a team/db"
            for store_type in store_types()
            for kind in ("SecretStored", "SecretUploadRejected")
        }
        printed: set[str] = set()
        async with asyncio.timeout(60):
            while not expected <= printed:
                printed.add((await process.stdout.readline()).decode().strip())
        assert printed == expected  # the example binds outcomes only; nothing else came
    finally:
        process.kill()
        await process.wait()


async def test_a_consumer_user_may_bind_its_own_queue_but_not_publish(
    consumer: aio_pika.abc.AbstractConnection,
) -> None:
    channel = await consumer.channel()
    queue = await channel.get_queue("consumer.audit")
    await queue.bind(EVENTS_EXCHANGE, routing_key="secret.secret_stored.*")
    stored = next(e for e in _events() if e.event_type == "SecretStored")
    with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
        await _publish(consumer, EVENTS_EXCHANGE, stored, stored.routing_key)
    # Nor straight into a reactor's queue through the default exchange.
    reactor = reactor_queue(store_types()[0]).name
    with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
        await _publish(consumer, "", stored, reactor)


async def test_a_consumer_user_binds_only_published_events_and_declares_or_takes_nothing(
    consumer: aio_pika.abc.AbstractConnection,
) -> None:
    refused = [
        ("declare", "consumer.audit.more"),
        ("declare", "m8.mine"),
        # A full queue that refuses publishes would fail m8's own (its outbox would retry).
        ("refusing", "consumer.audit"),
        ("delete", "consumer.audit"),
        ("bind", "#"),
        ("bind", "secret.#"),
        ("bind", "secret.*.vault"),
        ("bind", "secret.secret_stored"),
        ("take", reactor_queue(store_types()[0]).name),
        ("take", "m8.api.projections"),
    ]
    for action, name in refused:
        reason = "access to topic" if action == "bind" else "ACCESS_REFUSED"
        with pytest.raises(ChannelAccessRefused, match=reason):
            await _attempt(consumer, action, name)


async def _attempt(connection: aio_pika.abc.AbstractConnection, action: str, name: str) -> None:
    # A channel of its own: a refusal closes the channel it happens on.
    async with connection.channel() as channel:
        if action == "declare":
            await channel.declare_queue(name, arguments={"x-queue-type": "quorum"})
        elif action == "refusing":
            await channel.declare_queue(
                name, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
            )
        elif action == "delete":
            await channel.queue_delete(name)
        elif action == "bind":
            queue = await channel.get_queue("consumer.audit")
            await queue.bind(EVENTS_EXCHANGE, routing_key=name)
        else:
            await (await channel.get_queue(name)).get(fail=False)


def _consumer_made_by_the_command(broker: Broker, name: str) -> str:
    """`python -m m8.messaging.users consumer NAME`, as docs/consumers.md tells operators;
    the AMQP URL of the user it made (named after the virtual host, so deleted with it)."""
    password = secrets.token_hex(16)
    env = {
        **os.environ,
        "M8_RABBITMQ_MANAGEMENT_URL": broker.management_url,
        "M8_RABBITMQ_ADMIN_USER": broker.auth[0],
        "M8_RABBITMQ_ADMIN_PASSWORD": broker.auth[1],
        "M8_RABBITMQ_CONSUMER_PASSWORD": password,
        "M8_RABBITMQ_VHOST": broker.name,
        "M8_RABBITMQ_USER_PREFIX": f"{broker.name}-",
    }
    done = subprocess.run(
        [sys.executable, "-m", "m8.messaging.users", "consumer", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parts = urlsplit(broker.url)
    user = quote(f"{broker.name}-consumer-{name}", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def _events() -> list[StoredEvent]:
    store_type = store_types()[0]
    return [
        StoredEvent.new("secret", f"s:team/db-{n}", 1, event, METADATA)
        for n, event in enumerate(secret_events("s", store_type, "team/db"))
    ]


async def _publish(
    connection: aio_pika.abc.AbstractConnection, exchange: str, event: StoredEvent, key: str
) -> None:
    # A channel of its own: a refusal closes the channel it happens on.
    async with connection.channel(publisher_confirms=True) as channel:
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        async with asyncio.timeout(10):
            await target.publish(event_message(event), routing_key=key)
