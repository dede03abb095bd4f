"""Request/reply over RabbitMQ with direct reply-to and a timeout on every call.

Requests and replies are JSON objects. A reply is `{"ok": true, "result": {...}}` or
`{"ok": false, "error": {"code": ..., "detail": ...}}`; the client raises `RpcError`
for the latter, `RpcTimeout` when no reply came in time.

A server that stops answers the requests in hand for its grace period (5 s); a request
still unanswered then is dropped (rejected), not handed back like an event. Its caller
has waited at least that long: with the API's default timeout (M8_API_RPC_TIMEOUT, 5 s)
it has given up, and the request, which expires with the call, would reach nobody. Nor
is a second run harmless: `issue_upload_key` issues a new key each time, and the
cancelled run may have recorded one already. The caller gets RpcTimeout (the API answers
503 `rotator_unavailable` with Retry-After) and calls again: a fresh request, which a
running server answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from m8.messaging.broker import Broker
from m8.messaging.topology import RPC_EXCHANGE
from m8.messaging.worker import QueueWorker

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"
JsonObject = dict[str, Any]
Procedure = Callable[[JsonObject], Awaitable[JsonObject]]


class RpcError(Exception):
    """The server answered with an error."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class RpcTimeout(RpcError):
    """No answer in time: the server is down, busy or unreachable."""


class RpcClient:
    """Calls procedures of RPC servers; one reply consumer per client."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._pending: dict[str, asyncio.Future[JsonObject]] = {}
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        """Opens the channel and starts consuming replies."""
        self._channel = await self.broker.channel()
        self._exchange = await self._channel.get_exchange(RPC_EXCHANGE)
        replies = await self._channel.declare_queue(REPLY_TO, passive=True)
        self.broker.keep(replies)
        await replies.consume(self._on_reply, no_ack=True)

    async def call(
        self, queue: str, procedure: str, params: JsonObject, timeout: float = 10.0
    ) -> JsonObject:
        """Calls `procedure` on the server of `queue`; its result, or RpcError/RpcTimeout."""
        if self._exchange is None:
            raise RuntimeError("RpcClient.start() was not called")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._exchange.publish(
                    aio_pika.Message(
                        json.dumps({"procedure": procedure, "params": params}).encode(),
                        content_type="application/json",
                        correlation_id=correlation_id,
                        reply_to=REPLY_TO,
                        # A request nobody took in time is worthless: let the broker drop it.
                        expiration=timeout,
                    ),
                    routing_key=queue,
                )
                reply = await future
        except TimeoutError:
            raise RpcTimeout("timeout", f"no answer from {queue} within {timeout:g}s") from None
        finally:
            self._pending.pop(correlation_id, None)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise RpcError(str(error.get("code", "error")), str(error.get("detail", "")))
        result: JsonObject = reply.get("result") or {}
        return result

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            return  # late reply to a call that timed out
        try:
            future.set_result(json.loads(message.body))
        except ValueError:
            future.set_result({"ok": False, "error": {"code": "bad_reply", "detail": "not JSON"}})


class RpcServer(QueueWorker):
    """Serves procedures on one durable queue bound to `m8.rpc`."""

    def __init__(
        self, broker: Broker, queue: str, procedures: Mapping[str, Procedure], concurrency: int = 8
    ) -> None:
        self.broker = broker
        self.queue_name = queue
        self.procedures = dict(procedures)
        self.concurrency = concurrency
        self._channel: AbstractChannel | None = None
        super().__init__()

    async def start(self) -> None:
        """Declares the request queue and starts serving."""
        self._channel = await self.broker.channel(prefetch=self.concurrency)
        exchange = await self._channel.get_exchange(RPC_EXCHANGE)
        queue = await self._channel.declare_queue(self.queue_name, durable=True)
        await queue.bind(exchange, routing_key=self.queue_name)
        self.broker.keep(queue)
        await self.consume(queue)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Answers one request; one whose answer cannot be sent is dropped."""
        reply = await self._answer(message.body)
        try:
            if message.reply_to and self._channel is not None:
                await self._channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(reply).encode(),
                        content_type="application/json",
                        correlation_id=message.correlation_id,
                    ),
                    routing_key=message.reply_to,
                )
        except Exception as exc:
            log.warning("rpc reply not sent: %s", f"{type(exc).__name__}: {exc}")
            await self.settle(message, message.reject(requeue=False))
        else:
            await self.settle(message, message.ack())

    async def hand_back(self, message: AbstractIncomingMessage) -> None:
        """Drops a request whose handling was cancelled: its caller has given up (see the
        module's docstring)."""
        await message.reject(requeue=False)

    async def _answer(self, body: bytes) -> JsonObject:
        try:
            request = json.loads(body)
            procedure = self.procedures[request["procedure"]]
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise TypeError("params must be an object")
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": {"code": "bad_request", "detail": "malformed request"}}
        try:
            return {"ok": True, "result": await procedure(params)}
        except RpcError as exc:
            return {"ok": False, "error": {"code": exc.code, "detail": exc.detail}}
        except Exception:
            log.exception("rpc procedure failed", extra={"procedure": request["procedure"]})
            return {"ok": False, "error": {"code": "internal", "detail": "the server failed"}}
