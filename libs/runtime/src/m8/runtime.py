"""What every m8 service process shares: connections, the outbox relay, clean shutdown.

Services build one `Runtime` in their bootstrap, start their own consumers on it, and
`serve()` until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import uvloop
from aio_pika.exceptions import (
    AMQPConnectionError,
    AuthenticationError,
    ProbableAuthenticationError,
)
from aiormq.exceptions import ConnectionNotAllowed
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure

from m8.config import Settings, SettingsError
from m8.eventsourcing import EventStoreUnavailable, Repository
from m8.eventstore import MongoEventRecorder, OutboxRelay
from m8.eventstore.mongo import Document, connect_database
from m8.logs import configure_logging
from m8.messaging import Broker
from m8.messaging.permissions import consumes
from m8.messaging.topology import MissingQueue
from m8.messaging.worker import STOP_TIMEOUT

log = logging.getLogger(__name__)

# A service asked to stop is gone within 10 s (what orchestrators wait before they kill):
# its workers take up to 7 s (QueueWorker.stop), then its loops, the outbox flush and the
# connections (closed together) one second each at most.
LOOPS_TIMEOUT = 1.0
FLUSH_TIMEOUT = 1.0
CLOSE_TIMEOUT = 1.0
# How long a starting service waits for MongoDB and RabbitMQ to answer (one restarting, a
# pod started before them) before it gives up with the error.
STARTUP_PATIENCE = 30.0

T = TypeVar("T")


class Worker(Protocol):
    """Something that takes work from the broker: an event consumer, an RPC server."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ConfigurationError(SettingsError):
    """The process cannot start as configured; the message says what to set."""


@dataclass
class Runtime:
    """Connections and shared machinery of one service process."""

    name: str
    settings: Settings
    db: AsyncDatabase[Document]
    broker: Broker
    recorder: MongoEventRecorder
    relay: OutboxRelay
    repository: Repository
    workers: list[Worker] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, name: str, settings: Settings) -> Runtime:
        """Connects to MongoDB and RabbitMQ, creates indexes, starts the outbox relay."""
        if not settings.mongodb_uri:
            raise ConfigurationError("M8_MONGODB_URI is not set: where is MongoDB?")
        db = await connect_database(settings.mongodb_uri, settings.mongodb_database)
        recorder = MongoEventRecorder(db)
        try:
            await _patiently("MongoDB", recorder.create_indexes)
            # On its own broker user a service may declare only its own queues.
            broker = await _patiently(
                "RabbitMQ", lambda: Broker.connect(settings.amqp_url, f"m8-{name}", consumes(name))
            )
        except MissingQueue as exc:
            await db.client.close()
            raise ConfigurationError(str(exc)) from None
        except BaseException:
            await db.client.close()
            raise
        owner = f"{name}@{socket.gethostname()}:{os.getpid()}"
        # Publishes this service's events only: its broker user may publish no others.
        relay = OutboxRelay(recorder, broker, owner=owner, service=name)
        runtime = cls(
            name=name,
            settings=settings,
            db=db,
            broker=broker,
            recorder=recorder,
            relay=relay,
            # Whatever this process appends is published right after its commit.
            repository=Repository(recorder, on_append=relay.submit),
        )
        runtime.spawn(relay.run())
        return runtime

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Runs a background loop that lives as long as the process."""
        task = asyncio.create_task(coro, name=getattr(coro, "__qualname__", None))
        self.tasks.append(task)
        return task

    async def consume(self, worker: Worker) -> None:
        """Starts a consumer or RPC server that stops (finishing its work) with the runtime."""
        await worker.start()
        self.workers.append(worker)

    async def close(self) -> None:
        """Stops consumers (work in hand finishes, or goes back to the broker), loops,
        then connections: within 10 s, whatever fails or hangs on the way."""
        await _bounded([(f"stopping {w!r}", w.stop()) for w in self.workers], STOP_TIMEOUT)
        for task in self.tasks:
            task.cancel()
        await _bounded([(f"loop {t.get_name()}", t) for t in self.tasks], LOOPS_TIMEOUT)
        # Publish what this process stored, so that none of it waits for the backstop.
        await _bounded([("the outbox flush", self.relay.flush())], FLUSH_TIMEOUT)
        # A connection stuck on a dead peer must not keep the process from exiting.
        await _bounded(
            [
                ("closing the RabbitMQ connection", self.broker.close()),
                ("closing the MongoDB connection", self.db.client.close()),
            ],
            CLOSE_TIMEOUT,
        )


async def _bounded(steps: Sequence[tuple[str, Awaitable[None]]], timeout: float) -> None:
    """Runs `steps` together for up to `timeout` seconds; logs, and does not raise, those
    that failed, and cancels and logs those still running then."""
    tasks = {asyncio.ensure_future(step): what for what, step in steps}
    if not tasks:
        return
    done, late = await asyncio.wait(tasks, timeout=timeout)
    for task in late:
        task.cancel()
        log.warning("%s did not end in %gs", tasks[task], timeout)
    for task in done:
        if not task.cancelled() and (failure := task.exception()) is not None:
            log.warning("%s failed: %s", tasks[task], f"{type(failure).__name__}: {failure}")


async def wait_for_signal() -> None:
    """Returns on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _patiently(what: str, connect: Callable[[], Awaitable[T]]) -> T:
    """`connect()`, tried again while `what` does not answer, for STARTUP_PATIENCE seconds
    in all (each try included); then its error. A refused login, a refused virtual host or
    a missing queue is not waited out."""
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + STARTUP_PATIENCE, 0.5
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                return await connect()
        except TimeoutError:
            raise ConfigurationError(
                f"{what} did not answer within {STARTUP_PATIENCE:g}s of the start"
            ) from None
        except Exception as exc:
            if not _unreachable(exc) or loop.time() + pause > deadline:
                raise
            log.warning("%s does not answer yet (%s); trying again in %gs", what, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


def _unreachable(exc: Exception) -> bool:
    """Whether `exc` says the server did not answer (worth waiting for), rather than that
    it refused us (credentials, rights, settings: waiting changes nothing)."""
    if isinstance(exc, EventStoreUnavailable):
        return isinstance(exc.__cause__, ConnectionFailure)
    if isinstance(exc, ProbableAuthenticationError | AuthenticationError | ConnectionNotAllowed):
        return False
    return isinstance(exc, AMQPConnectionError | OSError)


def run_service(main: Coroutine[Any, Any, T]) -> T:
    """Runs a service's main coroutine to its end on uvloop's event loop (libuv), as the
    API runs under uvicorn: a MongoDB or broker round trip costs less CPU there than on
    asyncio's own loop (docs/performance.md)."""
    return uvloop.run(main)


@contextlib.asynccontextmanager
async def service(name: str, settings: Settings) -> AsyncIterator[Runtime]:
    """Sets up logging and a Runtime, and closes it however the block ends."""
    configure_logging(settings.log_level, settings.log_format)
    runtime = await Runtime.start(name, settings)
    log.info("service started", extra={"service": name})
    try:
        yield runtime
    finally:
        await runtime.close()
        log.info("service stopped", extra={"service": name})
