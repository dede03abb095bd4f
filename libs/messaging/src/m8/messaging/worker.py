"""What every queue consumer shares: consuming, and stopping quickly without losing work.

A worker asked to stop takes no more messages and lets those in hand finish for a grace
period; then it cancels the handlers still running and hands their messages back. How a
message goes back is the worker's choice (`hand_back`): returned to its queue by default.
A message whose settling has started (its ack, nack or reject is on the way) is never
handed back: handlers settle through `settle`, which notes that first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

log = logging.getLogger(__name__)

CANCEL_TIMEOUT = 1.0
# How long a stopping worker lets the messages in hand finish before it cancels them.
STOP_GRACE = 5.0
HAND_BACK_TIMEOUT = 1.0
# The longest `stop()` takes with the default grace.
STOP_TIMEOUT = CANCEL_TIMEOUT + STOP_GRACE + HAND_BACK_TIMEOUT


class QueueWorker(ABC):
    """Handles the messages of one queue; `stop()` ends the work in hand, one way or another."""

    def __init__(self) -> None:
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # Messages in hand whose ack, nack or reject has started: not to be handed back.
        self._settling: set[AbstractIncomingMessage] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._queue.name if self._queue else None!r})"

    @abstractmethod
    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Handles one message and settles it with `settle`."""

    async def hand_back(self, message: AbstractIncomingMessage) -> None:
        """Gives back a message whose handling was cancelled: to its queue, by default."""
        await message.nack(requeue=True)

    async def settle(self, message: AbstractIncomingMessage, outcome: Awaitable[None]) -> None:
        """Settles `message` with `outcome` (its `ack()`, `nack()` or `reject()`, not yet
        awaited). Once started, the message is never handed back, even if the handler is
        cancelled before the broker took it: the frame may be gone already, and a second
        settlement would duplicate the message and close the channel (unknown delivery tag)."""
        self._settling.add(message)
        try:
            await outcome
        except (AMQPError, RuntimeError) as exc:
            # The channel died since delivery; the broker redelivers the message and the
            # inbox (or the handler's own idempotency) absorbs the repeat.
            log.warning("could not settle message: %s", exc)

    async def consume(self, queue: AbstractQueue) -> None:
        """Starts taking messages from `queue`."""
        self._queue = queue
        self._tag = await queue.consume(self._on_message)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Takes no more messages, lets those in hand finish for up to `grace` seconds,
        then cancels the rest, which hand their messages back: within STOP_TIMEOUT (with
        the default grace)."""
        if self._queue is not None and self._tag is not None:
            # A channel the broker closed may never answer: closing the connection cancels
            # the consumer as well, so waiting longer than this buys nothing.
            with contextlib.suppress(AMQPError, ChannelInvalidStateError, TimeoutError):
                async with asyncio.timeout(CANCEL_TIMEOUT):
                    await self._queue.cancel(self._tag)
        if not self._in_flight:
            return
        _, late = await asyncio.wait(set(self._in_flight), timeout=grace)
        if not late:
            return
        log.info("handing back messages whose handling did not end in time: %d", len(late))
        for task in late:
            task.cancel()
        # Each hand-back is bounded by HAND_BACK_TIMEOUT; a handler that ignores its
        # cancellation must not hold the stop up (its message returns at disconnect).
        ended, stuck = await asyncio.wait(late, timeout=HAND_BACK_TIMEOUT)
        for task in ended:
            if not task.cancelled():
                task.exception()  # retrieved, so that asyncio does not report it again
        if stuck:
            log.warning("handlers still running after their cancellation: %d", len(stuck))

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
                if not message.processed and message not in self._settling:
                    async with asyncio.timeout(HAND_BACK_TIMEOUT):
                        await self.hand_back(message)
            except (AMQPError, RuntimeError, TimeoutError) as exc:
                log.warning("could not hand a message back; it returns when we disconnect: %s", exc)
            raise
        finally:
            self._settling.discard(message)
            if task is not None:
                self._in_flight.discard(task)
