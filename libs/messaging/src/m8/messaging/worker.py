"""What every queue consumer shares: consuming, and stopping without dropping work in hand."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError

CANCEL_TIMEOUT = 5.0


class QueueWorker(ABC):
    """Handles the messages of one queue; `stop()` waits for those in hand."""

    def __init__(self) -> None:
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Handles and settles one message."""

    async def consume(self, queue: AbstractQueue) -> None:
        """Starts taking messages from `queue`."""
        self._queue = queue
        self._tag = await queue.consume(self._on_message)

    async def stop(self) -> None:
        """Takes no more messages and waits for those in hand."""
        if self._queue is not None and self._tag is not None:
            # A channel the broker closed may never answer: closing the connection cancels
            # the consumer as well, so waiting longer than this buys nothing.
            with contextlib.suppress(AMQPError, TimeoutError):
                async with asyncio.timeout(CANCEL_TIMEOUT):
                    await self._queue.cancel(self._tag)
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs each delivery in a task of its own: track it until it is done.
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)
