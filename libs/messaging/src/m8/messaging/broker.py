"""A robust connection to RabbitMQ and confirmed publishing of events.

aio-pika restores channels, queues and consumers after a reconnect only while they are
still referenced, so `Broker` keeps them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.connection import make_url

from m8.eventsourcing import StoredEvent
from m8.messaging.topology import QueueSpec, declare_topology, ensure_topology

DEFAULT_CONFIRM_TIMEOUT = 10.0
# Data that stays in the event store: a message carries these as null. Consumers act on
# the store's copy of an event anyway. The ciphertext, as the store does once redacted; the
# fingerprint, an equality oracle on values that the API shows a user only for the paths
# it may write, while a queue consumer may bind to every store's outcomes; and the
# outcome's receipt signature, which signs the fingerprint with fields the message shows
# (a guess could be tested against it).
STORE_ONLY_FIELDS = ("ciphertext", "fingerprint", "receipt_signature")


def message_body(event: StoredEvent) -> dict[str, Any]:
    """The JSON of an event's message: the event without its store-only data."""
    body = event.to_json()
    body["data"] = {
        name: None if name in STORE_ONLY_FIELDS else value for name, value in body["data"].items()
    }
    return body


def event_message(event: StoredEvent) -> aio_pika.Message:
    """The AMQP message of an event: persistent JSON, its id as message id."""
    headers: dict[str, Any] = {
        "event_type": event.event_type,
        "aggregate_id": event.aggregate_id,
        "correlation_id": event.metadata.correlation_id,
    }
    if event.routing_suffix:
        headers["store_type"] = event.routing_suffix
    return aio_pika.Message(
        body=json.dumps(message_body(event), separators=(",", ":")).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.event_id,
        correlation_id=event.metadata.correlation_id,
        type=event.event_type,
        headers=headers,
    )


class Broker:
    """One robust connection, with a confirming channel for publishing events."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        events: AbstractExchange,
    ) -> None:
        self.connection = connection
        self._channel = channel
        self._events = events
        self._kept: list[object] = []

    @classmethod
    async def connect(
        cls, url: str, name: str, own_queues: Sequence[QueueSpec] | None = None
    ) -> Broker:
        """Connects (retrying in the background after losses) and declares the topology.

        With `own_queues` (a service on its own user) it declares those and makes sure
        the others exist (`ensure_topology`); without, it declares every queue.
        """
        # Made first and connected second, so that a connect that fails or is cancelled is
        # closed here rather than left retrying in the background.
        connection = aio_pika.RobustConnection(
            make_url(url, reconnect_interval=1), client_properties={"connection_name": name}
        )
        try:
            await connection.connect()
            # A message no queue takes comes back as an error, so the outbox keeps it.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            if own_queues is None:
                events = await declare_topology(channel)
            else:
                events = await ensure_topology(connection, channel, own_queues)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, channel, events)

    async def channel(
        self, prefetch: int | None = None, *, on_return_raises: bool = False
    ) -> AbstractChannel:
        """A new channel that the broker keeps (so it is restored after a reconnect).

        It confirms publishes. With `on_return_raises`, a mandatory message (aio-pika's
        default) that no queue takes raises `PublishError`; without, it is dropped and
        the publish succeeds."""
        channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=on_return_raises
        )
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        self._kept.append(channel)
        return channel

    def keep(self, thing: object) -> None:
        """Keeps a reference, so aio-pika restores `thing` after a reconnect."""
        self._kept.append(thing)

    async def publish_event(
        self, event: StoredEvent, timeout: float = DEFAULT_CONFIRM_TIMEOUT
    ) -> None:
        """Publishes to `m8.events` and waits for the broker's confirm; raises if the broker
        refused it or no queue took it."""
        async with asyncio.timeout(timeout):
            await self._events.publish(
                event_message(event), routing_key=event.routing_key, mandatory=True
            )

    async def close(self) -> None:
        """Closes the connection and every channel on it."""
        await self.connection.close()
