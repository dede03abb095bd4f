"""Each service's RabbitMQ user may do its own work and no more (the real broker decides).

The users are made as `m8 dev` makes them (m8.devservices.vhosts, from
m8.messaging.permissions), in the test's own virtual host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from m8.domain.events import (
    DefaultStoreChanged,
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
    StoreRegistered,
    UploadKeyClaimed,
    UploadKeyDestroyed,
    UploadKeyIssued,
)
from m8.eventsourcing import DomainEvent, Metadata, StoredEvent
from m8.eventstore import MongoEventRecorder, OutboxRelay
from m8.messaging import Broker as AmqpBroker
from m8.messaging.broker import event_message
from m8.messaging.permissions import consumes, owner, services
from m8.messaging.topology import (
    EVENTS_EXCHANGE,
    HANDBACK_EXCHANGE,
    KEYROTATOR_QUEUE,
    RPC_KEYROTATOR_QUEUE,
    MissingQueue,
    consumer_queues,
)
from tests.servers import Broker
from tests.support.events import eventually

METADATA = Metadata(actor="test", correlation_id="corr-permissions")
SECRET = {"upload_id": "u-1", "store": "s", "path": "team/db"}


def _secret_events(store_type: str) -> list[tuple[str, DomainEvent]]:
    common = {**SECRET, "store_type": store_type}
    return [
        (
            "secret",
            SecretUploadRequested(
                **common,
                key_id="k-1",
                client_public_key="cpk",
                nonce="n",
                ciphertext="c",
                ciphertext_sha256="0" * 64,
                requested_by="alice",
            ),
        ),
        ("secret", SecretStored(**common, upstream_version="1", fingerprint="fp1:x")),
        ("secret", SecretUploadRejected(**common, reason="bad_mac", detail="d")),
        ("secret", SecretStoreFailed(**common, reason="upstream_unavailable", detail="d")),
    ]


def every_kind_of_event() -> list[StoredEvent]:
    """One event of each type m8 records, for each store type where that matters (those
    that go to no bus included: no service may publish them)."""
    events: list[tuple[str, DomainEvent]] = [
        ("secret_store", StoreRegistered("s", "vault", {})),
        ("secret_store", DefaultStoreChanged("s")),
        ("upload_key", UploadKeyIssued("k-1", "s", "vault", "team/db", "kek", "sk", "t")),
        ("upload_key", UploadKeyClaimed("k-1", "u-1")),
        ("upload_key", UploadKeyDestroyed("k-1", "expired")),
        *_secret_events("vault"),
        *_secret_events("aws"),
    ]
    return [
        StoredEvent.new(aggregate, f"{aggregate}-{n}", 1, event, METADATA)
        for n, (aggregate, event) in enumerate(events, start=1)
    ]


async def _publish(connection: aio_pika.abc.AbstractConnection, event: StoredEvent) -> None:
    # A channel of its own: a refusal closes the channel it happens on.
    async with connection.channel(publisher_confirms=True) as channel:
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        async with asyncio.timeout(10):
            await exchange.publish(event_message(event), routing_key=event.routing_key)


@pytest.fixture
async def connections(
    broker: Broker,
) -> AsyncIterator[dict[str, aio_pika.abc.AbstractConnection]]:
    """A plain connection per service, on that service's own user."""
    opened: dict[str, aio_pika.abc.AbstractConnection] = {
        s: await aio_pika.connect(broker.service_url(s)) for s in services()
    }
    yield opened
    for connection in opened.values():
        await connection.close()


async def test_the_api_cannot_publish_a_secret_stored_event(
    connections: dict[str, aio_pika.abc.AbstractConnection],
) -> None:
    stored = next(e for e in every_kind_of_event() if e.event_type == "SecretStored")
    with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
        await _publish(connections["api"], stored)


async def test_a_reactor_cannot_publish_an_upload_request_or_another_types_outcome(
    connections: dict[str, aio_pika.abc.AbstractConnection],
) -> None:
    events = every_kind_of_event()
    request = next(e for e in events if e.event_type == "SecretUploadRequested")
    aws_outcome = next(
        e for e in events if e.event_type == "SecretStored" and e.routing_suffix == "aws"
    )
    for forbidden in (request, aws_outcome):
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await _publish(connections["reactor-vault"], forbidden)


async def test_each_service_may_publish_exactly_the_events_it_owns(
    connections: dict[str, aio_pika.abc.AbstractConnection],
) -> None:
    allowed: dict[str, list[str]] = {s: [] for s in services()}
    for service, connection in connections.items():
        for event in every_kind_of_event():
            try:
                await _publish(connection, event)
            except ChannelAccessRefused:
                continue
            allowed[service].append(event.routing_key)
    expected = {
        s: [e.routing_key for e in every_kind_of_event() if owner(e) == s] for s in services()
    }
    assert allowed == expected
    assert all(expected.values())


async def test_a_service_cannot_consume_another_services_queue(
    connections: dict[str, aio_pika.abc.AbstractConnection],
) -> None:
    for service, connection in connections.items():
        own = {spec.name for spec in consumes(service)}
        others = [spec.name for spec in consumer_queues() if spec.name not in own]
        if service != "keyrotator":
            others.append(RPC_KEYROTATOR_QUEUE)
        for queue in others:
            with pytest.raises(ChannelAccessRefused):
                await _take_one(connection, queue)


async def test_a_service_may_hand_messages_back_to_its_own_queues_only(
    connections: dict[str, aio_pika.abc.AbstractConnection],
) -> None:
    for service, connection in connections.items():
        own = {spec.name for spec in consumes(service)}
        for spec in consumer_queues():
            handing_back = _hand_back(connection, spec.name)
            if spec.name in own:
                await handing_back
            else:
                with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
                    await handing_back


async def _hand_back(connection: aio_pika.abc.AbstractConnection, queue: str) -> None:
    async with connection.channel(publisher_confirms=True) as channel:
        exchange = await channel.get_exchange(HANDBACK_EXCHANGE)
        async with asyncio.timeout(10):
            await exchange.publish(aio_pika.Message(b"{}"), routing_key=queue)


async def _take_one(connection: aio_pika.abc.AbstractConnection, queue: str) -> None:
    async with connection.channel() as channel:
        declared = await channel.get_queue(queue)
        await declared.get(fail=False)


async def _connect(broker: Broker, service: str) -> AmqpBroker:
    """m8's connection as `service` makes it, on its own user."""
    return await AmqpBroker.connect(broker.service_url(service), service, consumes(service))


async def test_a_service_on_its_own_user_finds_the_topology_declared_for_it(
    broker: Broker,
) -> None:
    for service in services():
        connection = await _connect(broker, service)
        await connection.close()


async def test_a_service_whose_queues_are_missing_says_so_rather_than_losing_events(
    broker: Broker, amqp: AmqpBroker
) -> None:
    channel = await amqp.channel()
    await channel.queue_delete(KEYROTATOR_QUEUE.name)
    with pytest.raises(MissingQueue, match=r"m8\.keyrotator"):
        await _connect(broker, "api")


async def test_each_services_relay_publishes_only_its_own_events_on_its_own_user(
    broker: Broker, recorder: MongoEventRecorder
) -> None:
    events = every_kind_of_event()
    for event in events:
        await recorder.append(
            event.aggregate_type, event.aggregate_id, 0, [event.decode()], METADATA
        )
    published = {}
    for service in services():
        before = await _published_ids(recorder)
        await _relay_until_done(broker, recorder, service, sum(owner(e) == service for e in events))
        published[service] = await _published_ids(recorder) - before
    for service, ids in published.items():
        stored = [e async for e in recorder.read_all() if str(e.event_id) in ids]
        assert {owner(e) for e in stored} == {service}
    assert await recorder.unpublished(100) == []


async def _relay_until_done(
    broker: Broker, recorder: MongoEventRecorder, service: str, count: int
) -> None:
    """Runs `service`'s relay on its own user until `count` more events are published."""
    target = len(await _published_ids(recorder)) + count
    connection = await _connect(broker, service)
    relay = OutboxRelay(recorder, connection, owner=f"test-{service}", service=service)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _published_count_is(recorder, target))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await connection.close()


async def _published_ids(recorder: MongoEventRecorder) -> set[str]:
    return {str(d["_id"]) async for d in recorder.events.find({"published": True}, {"_id": 1})}


async def _published_count_is(recorder: MongoEventRecorder, count: int) -> bool:
    return await recorder.events.count_documents({"published": True}) == count
