"""A starting service waits a while for MongoDB and RabbitMQ, not for a refused login."""

from __future__ import annotations

import pytest
from aio_pika.exceptions import AMQPConnectionError, ProbableAuthenticationError

from m8 import runtime
from m8.eventsourcing import EventStoreUnavailable


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
    [EventStoreUnavailable("MongoDB failed (AutoReconnect)"), AMQPConnectionError("refused")],
    ids=["mongodb", "rabbitmq"],
)
async def test_a_server_that_answers_after_a_while_is_waited_for(error: BaseException) -> None:
    connect = Flaky(error, failures=2)

    assert await runtime._patiently("it", connect) == "connected"
    assert connect.calls == 3


async def test_a_server_that_never_answers_fails_the_start_after_the_patience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "STARTUP_PATIENCE", 0.2)
    connect = Flaky(OSError("connection refused"), failures=1_000)

    with pytest.raises(OSError, match="connection refused"):
        await runtime._patiently("it", connect)
    assert connect.calls == 1  # the next try would come after the patience


async def test_a_refused_login_is_not_waited_out() -> None:
    connect = Flaky(ProbableAuthenticationError("ACCESS_REFUSED"), failures=1_000)

    with pytest.raises(ProbableAuthenticationError):
        await runtime._patiently("RabbitMQ", connect)
    assert connect.calls == 1
