"""A service told to stop gets through every step of its shutdown, whatever one step does:
a worker that fails to stop or a loop that will not end holds up neither the outbox flush
nor the closing of the connections."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from m8 import runtime as runtime_module
from m8.runtime import Runtime

HANG = asyncio.Event()  # never set


@dataclass
class Steps:
    """What the shutdown did, in order."""

    done: list[str] = field(default_factory=list)


@dataclass
class Worker:
    steps: Steps
    name: str
    failure: Exception | None = None
    hangs: bool = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.hangs:
            await HANG.wait()
        if self.failure is not None:
            raise self.failure
        self.steps.done.append(f"stopped {self.name}")


@dataclass
class Closes:
    steps: Steps
    what: str

    async def close(self) -> None:
        self.steps.done.append(f"closed {self.what}")

    async def flush(self) -> None:
        self.steps.done.append("flushed")


@dataclass
class Database:
    client: Closes


def _runtime(steps: Steps) -> Runtime:
    return Runtime(
        name="test",
        settings=cast(Any, None),
        db=cast(Any, Database(Closes(steps, "MongoDB"))),
        broker=cast(Any, Closes(steps, "RabbitMQ")),
        recorder=cast(Any, None),
        relay=cast(Any, Closes(steps, "relay")),
        repository=cast(Any, None),
    )


async def _stubborn_loop(release: asyncio.Event) -> None:
    """A background loop that ignores its cancellation until released."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue


async def test_a_failing_worker_and_a_stubborn_loop_still_let_the_flush_and_closes_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = Steps()
    runtime = _runtime(steps)
    runtime.workers += [
        Worker(steps, "failing", failure=RuntimeError("channel gone")),
        Worker(steps, "healthy"),
    ]
    release = asyncio.Event()
    loop = runtime.spawn(_stubborn_loop(release))
    try:
        async with asyncio.timeout(30):
            await runtime.close()
    finally:
        release.set()
        await loop

    assert steps.done == ["stopped healthy", "flushed", "closed RabbitMQ", "closed MongoDB"]
    assert "failed: RuntimeError: channel gone" in caplog.text
    assert "_stubborn_loop did not end" in caplog.text


async def test_a_worker_that_never_stops_does_not_keep_the_service_from_closing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="m8.runtime")
    monkeypatch.setattr(runtime_module, "STOP_TIMEOUT", 0.1)
    steps = Steps()
    runtime = _runtime(steps)
    runtime.workers += [Worker(steps, "stuck", hangs=True), Worker(steps, "healthy")]

    async with asyncio.timeout(30):
        await runtime.close()

    assert steps.done == ["stopped healthy", "flushed", "closed RabbitMQ", "closed MongoDB"]
    assert "did not end in 0.1s" in caplog.text
