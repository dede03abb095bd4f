"""What every queue consumer shares: consuming, and stopping quickly without losing work.

A worker asked to stop takes no more messages and lets those in hand finish for a grace
period; then it cancels the handlers still running and hands their messages back. How a
message goes back is the worker's choice (`hand_back`): returned to its queue by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError

log = logging.getLogger(__name__)

CANCEL_TIMEOUT = 1.0
# How long a stopping worker lets the messages in hand finish before it cancels them.
STOP_GRACE = 5.0
HAND_BACK_TIMEOUT = 1.0


class QueueWorker(ABC):
    """Handles the messages of one queue; `stop()` ends the work in hand, one way or another."""

    def __init__(self) -> None:
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Handles and settles one message."""

    async def hand_back(self, message: AbstractIncomingMessage) -> None:
        """Gives back a message whose handling was cancelled: to its queue, by default."""
        await message.nack(requeue=True)

    async def consume(self, queue: AbstractQueue) -> None:
        """Starts taking messages from `queue`."""
        self._queue = queue
        self._tag = await queue.consume(self._on_message)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Takes no more messages, lets those in hand finish for up to `grace` seconds,
        then cancels the rest, which hand their messages back."""
        if self._queue is not None and self._tag is not None:
            # A channel the broker closed may never answer: closing the connection cancels
            # the consumer as well, so waiting longer than this buys nothing.
            with contextlib.suppress(AMQPError, TimeoutError):
                async with asyncio.timeout(CANCEL_TIMEOUT):
                    await self._queue.cancel(self._tag)
        if not self._in_flight:
            return
        _, late = await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.info("handing back messages whose handling did not end in time: %d", len(late))
            await asyncio.gather(*late, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs each delivery in a task of its own: track it until it is done.
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.handle(message)
        except asyncio.CancelledError:
            # Stopping: the message was not settled, and must not wait for the connection
            # to close to go back.
            try:
                if not message.processed:
                    async with asyncio.timeout(HAND_BACK_TIMEOUT):
                        await self.hand_back(message)
            except (AMQPError, RuntimeError, TimeoutError) as exc:
                log.warning("could not hand a message back; it returns when we disconnect: %s", exc)
            raise
        finally:
            if task is not None:
                self._in_flight.discard(task)
