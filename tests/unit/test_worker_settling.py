"""A stopping worker hands back the messages its cancelled handlers had not settled, and
never one whose settling had started: settled twice, a message is duplicated and the
second settlement closes the channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from m8.eventsourcing import StoredEvent
from m8.messaging import EventConsumer, QueueSpec, RpcServer
from m8.messaging.broker import Broker, event_message
from m8.messaging.worker import QueueWorker
from tests.support.events import METADATA, SampleHappened

HANG = asyncio.Event()  # never set: what a handler waits for that does not end in time


class Delivery:
    """One delivered message. Like aio-pika's, its ack, nack or reject is on its way to
    the broker once called, and `processed` only once the write drained; `stall` makes
    the drain of the first settlement never end."""

    def __init__(self, body: bytes, *, stall: bool) -> None:
        self.body = body
        self.message_id = "m-1"
        self.headers: dict[str, Any] = {}
        self.reply_to: str | None = None
        self.correlation_id: str | None = None
        self.processed = False
        self.settlements: list[str] = []
        self.settling = asyncio.Event()
        self.stall = stall

    async def _settle(self, how: str) -> None:
        self.settlements.append(how)
        self.settling.set()
        if self.stall and len(self.settlements) == 1:
            await HANG.wait()
        self.processed = True

    async def ack(self) -> None:
        await self._settle("ack")

    async def nack(self, requeue: bool = True) -> None:
        await self._settle(f"nack requeue={requeue}")

    async def reject(self, requeue: bool = False) -> None:
        await self._settle(f"reject requeue={requeue}")


class Queue:
    """Delivers each message in a task of its own, as aio-pika does."""

    name = "m8.test.settling"

    def __init__(self) -> None:
        self._callback: Callable[[AbstractIncomingMessage], Coroutine[Any, Any, None]] | None = None

    async def consume(
        self, callback: Callable[[AbstractIncomingMessage], Coroutine[Any, Any, None]]
    ) -> str:
        self._callback = callback
        return "consumer-tag"

    async def cancel(self, tag: str) -> None:
        pass

    def deliver(self, message: Delivery) -> asyncio.Task[None]:
        assert self._callback is not None
        return asyncio.create_task(self._callback(cast(AbstractIncomingMessage, message)))


async def _handled(event: StoredEvent) -> None:
    pass


async def _hanging(event: StoredEvent) -> None:
    await HANG.wait()


async def _answered(params: dict[str, Any]) -> dict[str, Any]:
    return {}


async def _hanging_procedure(params: dict[str, Any]) -> dict[str, Any]:
    await HANG.wait()
    return {}


def _event_consumer(hangs: bool) -> QueueWorker:
    return EventConsumer(
        cast(Broker, None),
        QueueSpec(Queue.name, ()),
        _hanging if hangs else _handled,
        inbox=None,
    )


def _rpc_server(hangs: bool) -> QueueWorker:
    procedure = _hanging_procedure if hangs else _answered
    return RpcServer(cast(Broker, None), Queue.name, {"p": procedure})


def _body(worker: QueueWorker) -> bytes:
    if isinstance(worker, RpcServer):
        return b'{"procedure": "p", "params": {}}'
    event = StoredEvent.new("test", "agg", 1, SampleHappened(1), METADATA)
    return event_message(event).body


async def _stop_while_in_hand(worker: QueueWorker, delivery: Delivery) -> None:
    queue = Queue()
    await worker.consume(cast(AbstractQueue, queue))
    handling = queue.deliver(delivery)
    await asyncio.sleep(0)  # the handler is running
    if delivery.stall:
        async with asyncio.timeout(10):
            await delivery.settling.wait()
    async with asyncio.timeout(30):
        await worker.stop(grace=0)
        with pytest.raises(asyncio.CancelledError):
            await handling


@pytest.mark.parametrize("make", [_event_consumer, _rpc_server], ids=["event", "rpc"])
async def test_a_message_whose_ack_is_on_its_way_at_stop_is_not_handed_back(
    make: Callable[[bool], QueueWorker],
) -> None:
    worker = make(False)
    delivery = Delivery(_body(worker), stall=True)

    await _stop_while_in_hand(worker, delivery)

    assert delivery.settlements == ["ack"]


@pytest.mark.parametrize(
    ("make", "handed_back"),
    [(_event_consumer, "nack requeue=True"), (_rpc_server, "reject requeue=False")],
    ids=["event", "rpc"],
)
async def test_a_message_whose_handler_did_not_end_in_time_is_handed_back_once(
    make: Callable[[bool], QueueWorker], handed_back: str
) -> None:
    worker = make(True)
    delivery = Delivery(_body(worker), stall=False)

    await _stop_while_in_hand(worker, delivery)

    # An event goes back to its queue (this consumer never started, so it has no
    # m8.handback exchange); an RPC request, whose caller has given up, is dropped.
    assert delivery.settlements == [handed_back]
