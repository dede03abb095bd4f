"""Every exchange and queue of m8, declared in one place (DESIGN section 4).

Consumer queues are durable quorum queues with a delivery limit; a message nacked past
the limit, or rejected as poison, moves to `m8.dead.<queue>` through `m8.dlx`, where
operators see and re-drive it in the management UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from aiormq.abc import FieldTable
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity

from m8 import stores

EVENTS_EXCHANGE = "m8.events"
RPC_EXCHANGE = "m8.rpc"
DEAD_LETTER_EXCHANGE = "m8.dlx"
# Where a stopping consumer puts back a copy of a message it had in hand, routed by the
# queue's name to that queue only (m8.messaging.consumer.EventConsumer.hand_back).
HANDBACK_EXCHANGE = "m8.handback"
DEFAULT_DELIVERY_LIMIT = 5


def store_types() -> tuple[str, ...]:
    """The upstream types that have reactors (and so queues and broker users of their own):
    every store type registered (m8.stores)."""
    return stores.names()


@dataclass(frozen=True)
class QueueSpec:
    """A consumer's queue: its name and the routing keys it binds on `m8.events`."""

    name: str
    bindings: tuple[str, ...]
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    @property
    def dead_letter_queue(self) -> str:
        """Where messages go that this queue's consumer could not handle."""
        return f"m8.dead.{self.name.removeprefix('m8.')}"

    def arguments(self) -> FieldTable:
        """Queue arguments: quorum, delivery limit, at-least-once dead-lettering."""
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


def reactor_queue(store_type: str) -> QueueSpec:
    """The queue of the reactors for one upstream type: `m8.reactor.<type>`."""
    return QueueSpec(f"m8.reactor.{store_type}", (f"secret.secret_upload_requested.{store_type}",))


KEYROTATOR_QUEUE = QueueSpec(
    "m8.keyrotator",
    (
        "secret.secret_stored.#",
        "secret.secret_upload_rejected.#",
        "secret.secret_upload_superseded.#",
        "secret.secret_store_failed.#",
    ),
)
API_PROJECTIONS_QUEUE = QueueSpec("m8.api.projections", ("#",))
RPC_KEYROTATOR_QUEUE = "m8.rpc.keyrotator"


def consumer_queues() -> tuple[QueueSpec, ...]:
    """Every consumer queue of m8."""
    return (*(reactor_queue(t) for t in store_types()), KEYROTATOR_QUEUE, API_PROJECTIONS_QUEUE)


async def declare_topology(channel: AbstractChannel) -> AbstractExchange:
    """Declares every exchange and consumer queue; returns `m8.events`.

    For a user with every right (an administrator, the tests). A service's own user may
    declare only its own queues: it uses `ensure_topology`.
    """
    for spec in consumer_queues():
        await declare_queue(channel, spec)
    return await channel.get_exchange(EVENTS_EXCHANGE)


class MissingQueue(Exception):
    """A consumer queue does not exist and this user may not declare it."""


async def ensure_topology(
    connection: AbstractConnection, channel: AbstractChannel, own: Sequence[QueueSpec]
) -> AbstractExchange:
    """Declares the exchanges and the `own` queues, and makes sure every other consumer
    queue exists, so that an event published before its consumer first ran still has a
    queue to wait in; returns `m8.events`.

    Another service's queue is declared here only if this user may (declaring a queue
    that dead-letters needs read rights on it); otherwise it must exist already (the
    operator's definitions, or `m8 dev`, declare the topology), or MissingQueue.
    """
    for spec in own:
        try:
            await declare_queue(channel, spec)
        except ChannelAccessRefused:
            # Definitions from an older release lack an exchange or binding of this one.
            raise MissingQueue(
                f"this user may not declare queue {spec.name}, its exchanges or bindings: "
                "import m8's RabbitMQ definitions (deploy/rabbitmq/definitions.json)"
            ) from None
    for spec in consumer_queues():
        if spec not in own and not await _queue_exists(connection, spec):
            try:
                async with connection.channel() as other:
                    await declare_queue(other, spec)
            except ChannelAccessRefused:
                raise MissingQueue(
                    f"queue {spec.name} does not exist and this user may not declare it: "
                    "import m8's RabbitMQ definitions (deploy/rabbitmq/definitions.json)"
                ) from None
    return await declare_exchanges(channel)


async def _queue_exists(connection: AbstractConnection, spec: QueueSpec) -> bool:
    # A passive declare needs no rights, but closes its channel when the queue is missing.
    try:
        async with connection.channel() as probe:
            await probe.declare_queue(spec.name, passive=True)
    except ChannelNotFoundEntity:
        return False
    return True


async def declare_exchanges(channel: AbstractChannel) -> AbstractExchange:
    """Declares m8's exchanges; returns `m8.events`."""
    await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    await channel.declare_exchange(RPC_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    await channel.declare_exchange(HANDBACK_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    return await channel.declare_exchange(
        EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """Declares a consumer queue, its bindings and its dead-letter queue."""
    events = await declare_exchanges(channel)
    dlx = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
    dead = await channel.declare_queue(
        spec.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key=spec.name)
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments())
    for key in spec.bindings:
        await queue.bind(events, routing_key=key)
    await queue.bind(HANDBACK_EXCHANGE, routing_key=spec.name)
    return queue
