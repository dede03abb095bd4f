"""A starting service waits a while for MongoDB and RabbitMQ, not for a refused login."""

from __future__ import annotations

import asyncio
import time

import pytest
from aio_pika.exceptions import AMQPConnectionError, ProbableAuthenticationError
from aiormq.exceptions import ConnectionNotAllowed
from pymongo.errors import AutoReconnect, OperationFailure

from m8 import runtime
from m8.eventsourcing import EventStoreUnavailable
from m8.runtime import ConfigurationError


def mongodb_failed(cause: Exception) -> EventStoreUnavailable:
    """What `mongo_errors` makes of a driver's error."""
    error = EventStoreUnavailable(f"MongoDB failed ({type(cause).__name__})")
    error.__cause__ = cause
    return error


class Flaky:
    """Fails with `error` `failures` times, then answers."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "connected"


@pytest.mark.parametrize(
    "error",
    [mongodb_failed(AutoReconnect("connection refused")), AMQPConnectionError("refused")],
    ids=["mongodb", "rabbitmq"],
)
async def test_a_server_that_answers_after_a_while_is_waited_for(error: BaseException) -> None:
    connect = Flaky(error, failures=2)

    async with asyncio.timeout(30):
        assert await runtime._patiently("it", connect) == "connected"
    assert connect.calls == 3


async def test_a_server_that_never_answers_fails_the_start_after_the_patience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "STARTUP_PATIENCE", 1.0)
    connect = Flaky(OSError("connection refused"), failures=1_000)
    started = time.monotonic()

    async with asyncio.timeout(30):
        with pytest.raises(OSError, match="connection refused"):
            await runtime._patiently("it", connect)
    assert connect.calls == 2  # again after 0.5 s; the next pause would pass the patience
    assert time.monotonic() - started >= 0.5


async def test_a_try_that_hangs_is_cut_at_the_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "STARTUP_PATIENCE", 0.3)

    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    async with asyncio.timeout(30):
        with pytest.raises(ConfigurationError, match=r"MongoDB did not answer within 0\.3s"):
            await runtime._patiently("MongoDB", hangs)


@pytest.mark.parametrize(
    "error",
    [
        ProbableAuthenticationError("ACCESS_REFUSED"),
        ConnectionNotAllowed("NOT_ALLOWED - vhost refused"),
        mongodb_failed(OperationFailure("Authentication failed.", code=18)),
    ],
    ids=["rabbitmq-login", "rabbitmq-vhost", "mongodb-login"],
)
async def test_a_refusal_is_not_waited_out(error: BaseException) -> None:
    connect = Flaky(error, failures=1_000)

    with pytest.raises(type(error)):
        await runtime._patiently("it", connect)
    assert connect.calls == 1
