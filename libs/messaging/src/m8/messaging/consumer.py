"""Runs a handler for each event of a queue: at least once in, effectively once out.

The runner acks a message only after the handler returned (the handler stores its
outcome first). A redelivered event whose id the inbox already holds is acked without
running the handler again. Undecodable messages and `PoisonMessage` go to the dead-letter
queue at once; `TransientError` is retried with backoff in place, then the message is
requeued, as it is when the handler or the inbox fails otherwise, and the queue's
delivery limit dead-letters it in the end. `NotNow` hands the message back to the end of
its queue, uncounted. Every message is settled one way or another.
A handler that is idempotent by construction (a projection) may go without an inbox.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from m8.eventsourcing import StoredEvent
from m8.messaging.broker import Broker
from m8.messaging.errors import NotNow, PoisonMessage, TransientError
from m8.messaging.topology import HANDBACK_EXCHANGE, QueueSpec, declare_queue
from m8.messaging.worker import QueueWorker

log = logging.getLogger(__name__)

Handler = Callable[[StoredEvent], Awaitable[None]]
# How often a message was handed back, by stopping consumers or by `NotNow` (a header of
# the copy).
HANDED_BACK_HEADER = "m8-handed-back"


class Inbox(Protocol):
    """Remembers which events a consumer has handled."""

    async def seen(self, consumer: str, event_id: str) -> bool:
        """Whether `consumer` already handled `event_id`."""
        ...

    async def remember(self, consumer: str, event_id: str) -> None:
        """Notes that `consumer` handled `event_id`."""
        ...


class EventConsumer(QueueWorker):
    """Consumes one queue with bounded concurrency."""

    def __init__(
        self,
        broker: Broker,
        spec: QueueSpec,
        handler: Handler,
        inbox: Inbox | None,
        *,
        concurrency: int = 4,
        attempts: int = 4,
        max_backoff: float = 5.0,
    ) -> None:
        self.broker = broker
        self.spec = spec
        self.handler = handler
        self.inbox = inbox
        self.concurrency = concurrency
        self.attempts = attempts
        self.max_backoff = max_backoff
        self._handback: AbstractExchange | None = None
        super().__init__()

    async def start(self) -> None:
        """Declares the queue and starts consuming."""
        # Prefetch equals concurrency: the broker never hands us more than we work on.
        # Its publishes (`hand_back`'s) raise when no queue takes them.
        channel = await self.broker.channel(prefetch=self.concurrency, on_return_raises=True)
        queue = await declare_queue(channel, self.spec)
        self.broker.keep(queue)
        self._handback = await channel.get_exchange(HANDBACK_EXCHANGE)
        await self.consume(queue)

    async def hand_back(self, message: AbstractIncomingMessage) -> None:
        """Puts a copy of the message back on its queue, then acks the original (a
        stopping consumer's message, or one whose handler said `NotNow`).

        Returned instead, it would count against the queue's delivery limit: enough
        shutdowns while it was in hand would dead-letter a message nothing was wrong
        with. The copy starts its count afresh; `m8-handed-back` says how often. If the
        broker does not take the copy, the original is returned to its queue instead."""
        if self._handback is None:
            await super().hand_back(message)
            return
        headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
        handed = headers.get(HANDED_BACK_HEADER)
        headers[HANDED_BACK_HEADER] = (handed if isinstance(handed, int) else 0) + 1
        copy = message_copy(message, headers)
        try:
            # Confirmed, and returned if no queue takes it (the channel raises on returns):
            # a failure anywhere before the ack leaves a duplicate, never a loss.
            await self._handback.publish(copy, routing_key=self.spec.name, mandatory=True)
        except DeliveryError as exc:
            # Unroutable (the queue's binding to m8.handback is missing) or refused (the
            # queue is full): the original goes back as it is, counted.
            log.warning(
                "the broker did not take a handed-back copy; message returned to its queue "
                "instead: %s",
                _describe(exc),
                extra={"queue": self.spec.name, "message_id": message.message_id},
            )
            await super().hand_back(message)
            return
        await message.ack()

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Decodes, deduplicates, handles and settles one event message."""
        try:
            event = StoredEvent.from_json(json.loads(message.body))
        except (ValueError, KeyError, TypeError):
            log.error(
                "undecodable message dead-lettered",
                extra={"queue": self.spec.name, "message_id": message.message_id},
            )
            await self.settle(message, message.reject(requeue=False))
            return
        fields = {"queue": self.spec.name, "event_id": event.event_id, "event": event.event_type}
        try:
            if self.inbox is None or not await self.inbox.seen(self.spec.name, event.event_id):
                await self._run_handler(event)
                if self.inbox is not None:
                    # If this fails the event comes again; the handler is idempotent.
                    await self.inbox.remember(self.spec.name, event.event_id)
        except PoisonMessage as exc:
            log.error("poison event dead-lettered: %s", exc, extra=fields)
            await self.settle(message, message.reject(requeue=False))
        except NotNow as exc:
            log.info("event handed back for later: %s", exc, extra=fields)
            # Settled by the hand-back: the copy published, the original acked.
            await self.settle(message, self.hand_back(message))
        except Exception as exc:
            # The handler or the inbox failed. Requeued, never left unsettled (that would
            # hold a prefetch slot for good); the delivery limit dead-letters it if this
            # keeps happening.
            log.warning("event handling failed, requeued: %s", _describe(exc), extra=fields)
            await self.settle(message, message.nack(requeue=True))
        else:
            await self.settle(message, message.ack())

    async def _run_handler(self, event: StoredEvent) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=self.max_backoff),
            reraise=True,
        ):
            with attempt:
                await self.handler(event)


def message_copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of `message` to publish again: its body, ids, type and properties,
    with `headers`."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
