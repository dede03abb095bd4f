"""Event store benchmark: raw MongoDB inserts against the whole append-to-consumer path.

Run `python -m bench.eventstore --events N --concurrency C`. It starts (or finds) the
servers with m8.devservices, works in a throwaway RabbitMQ virtual host and a fresh
MongoDB database, and prints what it measured: the raw insert rate of the server, the
append rate and end-to-end rate through the outbox relay and a consumer with an inbox,
and how many MongoDB writes and broker messages each event cost. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import bson
import httpx
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from m8.config import Settings
from m8.devservices import ServiceError, Services, local_services
from m8.eventsourcing import DomainEvent, Metadata, StoredEvent, registry
from m8.eventstore import MongoEventRecorder, MongoInbox, OutboxRelay
from m8.eventstore.mongo import Document, to_document
from m8.messaging import Broker, EventConsumer, QueueSpec
from m8.messaging.topology import EVENTS_EXCHANGE

AGGREGATE_TYPE = "bench"
METADATA = Metadata(actor="bench", correlation_id="bench-eventstore")
QUEUE = QueueSpec("m8.bench.eventstore", (f"{AGGREGATE_TYPE}.#",))
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
READ_COMMANDS = frozenset({"find", "getMore", "aggregate", "count", "distinct"})
# The management API refreshes its counters every 5 s by default; a little more than
# that without change means they are final.
STATS_QUIET_SECONDS = 6.0
STATS_LIMIT_SECONDS = 30.0

Counts = dict[str, int]


@registry.register("BenchHappened")
@dataclass(frozen=True)
class BenchHappened(DomainEvent):
    """A neutral event for measuring the machinery."""

    n: int


def aggregate_id(n: int) -> str:
    """The aggregate of the n-th event: one new aggregate per event, same length for all."""
    return f"bench-{n:08d}"


def event_document(n: int) -> Document:
    """The MongoDB document that appending the n-th event writes."""
    event = StoredEvent.new(AGGREGATE_TYPE, aggregate_id(n), 1, BenchHappened(n), METADATA)
    return to_document(event)


# --- counting ----------------------------------------------------------------------


class CommandCounter(CommandListener):
    """Counts the commands this process sends to one database and the documents written."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.counts: Counts = {"write commands": 0, "documents written": 0, "read commands": 0}

    def started(self, event: CommandStartedEvent) -> None:
        if event.database_name != self.database:
            return
        if event.command_name in WRITE_COMMANDS:
            self.counts["write commands"] += 1
        elif event.command_name in READ_COMMANDS:
            self.counts["read commands"] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        if event.database_name == self.database and event.command_name in WRITE_COMMANDS:
            self.counts["documents written"] += documents_written(event.command_name, event.reply)

    def failed(self, event: CommandFailedEvent) -> None:
        """A failed command wrote nothing; it was counted when it started."""


def documents_written(command: str, reply: Mapping[str, Any]) -> int:
    """How many documents a successful write command inserted, changed or removed."""
    if command == "update":
        return int(reply.get("nModified", 0)) + len(reply.get("upserted", []))
    if command == "findAndModify":
        return int(reply.get("lastErrorObject", {}).get("n", 0))
    return int(reply.get("n", 0))  # insert, delete


# The server's operation counters (serverStatus opcounters).
OPCOUNTERS = ("insert", "update", "delete", "query", "getmore", "command")


async def opcounters(client: AsyncMongoClient[Document]) -> Counts:
    """The server's opcounters (whole server), or none when it does not report them."""
    try:
        ops = (await client.admin.command("serverStatus")).get("opcounters")
    except OperationFailure:
        return {}
    return {name: int(ops.get(name, 0)) for name in OPCOUNTERS} if isinstance(ops, Mapping) else {}


async def server_writes(client: AsyncMongoClient[Document]) -> int | None:
    """The server's insert+update+delete opcounters (whole server), if it reports them."""
    ops = await opcounters(client)
    return sum(ops[name] for name in ("insert", "update", "delete")) if ops else None


async def mongo_sample(observer: AsyncMongoClient[Document], counter: CommandCounter) -> Counts:
    """The client-side command counts and, where the server has them, its opcounters."""
    sample = dict(counter.counts)
    if (ops := await server_writes(observer)) is not None:
        sample["server writes"] = ops
    return sample


def delta(after: Counts, before: Counts) -> Counts:
    """How much each counter grew."""
    return {name: value - before.get(name, 0) for name, value in after.items()}


class Management:
    """The RabbitMQ management API: a throwaway virtual host and its message counters."""

    def __init__(self, management_url: str, auth: tuple[str, str]) -> None:
        self.user = auth[0]
        self.http = httpx.AsyncClient(base_url=f"{management_url}/api", auth=auth, timeout=30)

    async def close(self) -> None:
        """Closes the HTTP client."""
        await self.http.aclose()

    async def version(self) -> str:
        """The broker's RabbitMQ version."""
        response = await self.http.get("/overview")
        response.raise_for_status()
        return str(response.json().get("rabbitmq_version", "?"))

    async def create_vhost(self, vhost: str) -> None:
        """A new virtual host that the API's user may use fully."""
        (await self.http.put(f"/vhosts/{quote(vhost, safe='')}")).raise_for_status()
        (
            await self.http.put(
                f"/permissions/{quote(vhost, safe='')}/{quote(self.user, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            )
        ).raise_for_status()

    async def delete_vhost(self, vhost: str) -> None:
        """Deletes the virtual host with its exchanges and queues."""
        (await self.http.delete(f"/vhosts/{quote(vhost, safe='')}")).raise_for_status()

    async def counters(self, vhost: str, queue: str) -> Counts:
        """Messages published to `m8.events` and delivered from `queue`, as the API sees them."""
        exchange = await self.message_stats(f"/exchanges/{quote(vhost, safe='')}/{EVENTS_EXCHANGE}")
        consumed = await self.message_stats(
            f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
        )
        return {
            "published": int(exchange.get("publish_in", 0)),
            "delivered": int(consumed.get("deliver_get", 0)),
            "redelivered": int(consumed.get("redeliver", 0)),
        }

    async def settled_counters(self, vhost: str, queue: str) -> tuple[Counts, bool]:
        """The counters once they stop changing (bounded); and whether they did stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STATS_LIMIT_SECONDS
        last = await self.counters(vhost, queue)
        unchanged_since = loop.time()
        while loop.time() < deadline:
            await asyncio.sleep(1.0)
            now = await self.counters(vhost, queue)
            if now != last:
                last, unchanged_since = now, loop.time()
            elif loop.time() - unchanged_since >= STATS_QUIET_SECONDS:
                return last, True
        return last, False

    async def message_stats(self, path: str) -> Mapping[str, Any]:
        response = await self.http.get(path)
        response.raise_for_status()
        stats: Mapping[str, Any] = response.json().get("message_stats", {})
        return stats


# --- the two measurements ----------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """What one measured phase took and cost."""

    count: int
    writes_returned: float  # seconds from the first write until the last one returned
    consumed: float | None  # seconds from the first write until the consumer had them all
    mongo: Counts
    broker: Counts | None = None
    broker_settled: bool = True


class Handled:
    """Counts the distinct events the consumer handled; signals when it has them all."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.ids: set[str] = set()
        self.all = asyncio.Event()

    async def handler(self, event: StoredEvent) -> None:
        self.ids.add(event.event_id)
        if len(self.ids) >= self.expected:
            self.all.set()


async def run_workers(
    concurrency: int, count: int, work: Callable[[int], Awaitable[object]]
) -> None:
    """Runs `work(n)` for every n below `count` on `concurrency` workers, one call each at a
    time."""
    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            await work(n)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def measure_raw_inserts(
    client: AsyncMongoClient[Document],
    observer: AsyncMongoClient[Document],
    counter: CommandCounter,
    count: int,
    concurrency: int,
) -> Phase:
    """`insert_one` of event-shaped documents into a collection indexed like `events`."""
    scratch = MongoEventRecorder(client[counter.database], collection="bench_raw_inserts")
    await scratch.create_indexes()
    docs = [event_document(n) for n in range(count)]
    before = await mongo_sample(observer, counter)
    start = time.perf_counter()
    await run_workers(concurrency, count, lambda n: scratch.events.insert_one(docs[n]))
    elapsed = time.perf_counter() - start
    return Phase(count, elapsed, None, delta(await mongo_sample(observer, counter), before))


async def measure_full_path(
    client: AsyncMongoClient[Document],
    observer: AsyncMongoClient[Document],
    counter: CommandCounter,
    management: Management,
    amqp_url: str,
    vhost: str,
    count: int,
    concurrency: int,
) -> Phase:
    """Appends through the recorder, relays through the outbox, consumes with an inbox."""
    db = client[counter.database]
    recorder = MongoEventRecorder(db)
    await recorder.create_indexes()
    inbox = MongoInbox(db)
    await inbox.create_indexes()
    handled = Handled(count)
    mongo_before = await mongo_sample(observer, counter)
    async with contextlib.AsyncExitStack() as running:
        # Two connections, as the relay and the consumer live in different processes.
        publisher = await Broker.connect(amqp_url, name="m8-bench-relay")
        running.push_async_callback(publisher.close)
        subscriber = await Broker.connect(amqp_url, name="m8-bench-consumer")
        running.push_async_callback(subscriber.close)
        consumer = EventConsumer(subscriber, QUEUE, handled.handler, inbox, concurrency=concurrency)
        await consumer.start()
        running.push_async_callback(consumer.stop)
        relay = OutboxRelay(recorder, publisher, owner="m8-bench")
        relay_task = asyncio.create_task(relay.run())
        running.push_async_callback(cancel, relay_task)
        broker_before = await management.counters(vhost, QUEUE.name)

        async def append(n: int) -> None:
            appended = await recorder.append(
                AGGREGATE_TYPE, aggregate_id(n), 0, [BenchHappened(n)], METADATA
            )
            relay.submit(appended)  # as a service's repository hands it its commits

        start = time.perf_counter()
        await run_workers(concurrency, count, append)
        appended = time.perf_counter() - start
        await handled.all.wait()
        consumed = time.perf_counter() - start
        # The relay marks events published after the broker confirmed them, which may be
        # after the consumer saw them: count those writes too.
        await all_published(MongoEventRecorder(observer[counter.database]))
    # Everything stopped: the consumer's last inbox notes are written.
    mongo = delta(await mongo_sample(observer, counter), mongo_before)
    broker_after, settled = await management.settled_counters(vhost, QUEUE.name)
    return Phase(count, appended, consumed, mongo, delta(broker_after, broker_before), settled)


async def all_published(recorder: MongoEventRecorder) -> None:
    """Returns once no event waits for the relay."""
    while True:
        if await recorder.events.count_documents({"published": False}, limit=1) == 0:
            return
        await asyncio.sleep(0.05)


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancels `task` and waits until it has finished."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- the run -----------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Everything the run prints."""

    events: int
    concurrency: int
    mongodb: str
    rabbitmq: str
    document_bytes: int
    raw: Phase
    full: Phase


def vhost_url(amqp_url: str, vhost: str) -> str:
    """`amqp_url` pointing at `vhost` instead."""
    return urlunsplit(urlsplit(amqp_url)._replace(path="/" + quote(vhost, safe="")))


def where(url: str) -> str:
    """host:port of a URL, without credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


async def describe_mongodb(observer: AsyncMongoClient[Document], url: str) -> str:
    """The server's name and version, and where it listens."""
    build = await observer.admin.command("buildInfo")
    if "secantusVersion" in build:
        return f"SecantusDB {build['secantusVersion']} at {where(url)}"
    return f"MongoDB {build.get('version', '?')} at {where(url)}"


async def run(services: Services, events: int, concurrency: int, timeout: float) -> Report:
    """Both measurements on the servers of `services`, in a fresh database and vhost."""
    mongodb, rabbitmq = services["mongodb"], services["rabbitmq"]
    parts = urlsplit(rabbitmq.url)
    management = Management(
        rabbitmq.extra["management_url"], (parts.username or "guest", parts.password or "guest")
    )
    database = f"m8_bench_{uuid.uuid4().hex[:12]}"
    vhost = f"m8-bench-{uuid.uuid4().hex[:12]}"
    counter = CommandCounter(database)
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongodb.url, tz_aware=True, event_listeners=[counter]
    )
    # The benchmark's own polling goes through a second client, so it is not counted.
    observer: AsyncMongoClient[Document] = AsyncMongoClient(mongodb.url, tz_aware=True)
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(management.close)
        cleanup.push_async_callback(client.close)
        cleanup.push_async_callback(observer.close)
        cleanup.push_async_callback(observer.drop_database, database)
        await management.create_vhost(vhost)
        cleanup.push_async_callback(management.delete_vhost, vhost)
        async with asyncio.timeout(timeout):
            raw = await measure_raw_inserts(client, observer, counter, events, concurrency)
            full = await measure_full_path(
                client,
                observer,
                counter,
                management,
                vhost_url(rabbitmq.url, vhost),
                vhost,
                events,
                concurrency,
            )
        started = " (started for this run, in memory)" if mongodb.managed else ""
        return Report(
            events=events,
            concurrency=concurrency,
            mongodb=await describe_mongodb(observer, mongodb.url) + started,
            rabbitmq=f"RabbitMQ {await management.version()} at {where(rabbitmq.url)},"
            f" vhost {vhost} (deleted after the run)",
            document_bytes=len(bson.encode(event_document(0))),
            raw=raw,
            full=full,
        )


# --- the table ---------------------------------------------------------------------


def _rate(count: int, seconds: float | None) -> str:
    return "-" if seconds is None else f"{count / seconds:.1f}"


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _per(counts: Counts | None, name: str, events: int) -> str:
    if counts is None or name not in counts:
        return "n/a" if counts is not None else "-"
    return f"{counts[name] / events:.2f}"


FIGURES: tuple[tuple[str, Callable[[Phase], str]], ...] = (
    ("elapsed until all writes returned (s)", lambda p: _seconds(p.writes_returned)),
    ("rate until all writes returned (/s)", lambda p: _rate(p.count, p.writes_returned)),
    ("elapsed until consumer handled all (s)", lambda p: _seconds(p.consumed)),
    ("end-to-end rate (events/s)", lambda p: _rate(p.count, p.consumed)),
    ("mongodb write commands / event", lambda p: _per(p.mongo, "write commands", p.count)),
    ("mongodb documents written / event", lambda p: _per(p.mongo, "documents written", p.count)),
    ("mongodb read commands / event", lambda p: _per(p.mongo, "read commands", p.count)),
    ("server opcounters ins+upd+del / event", lambda p: _per(p.mongo, "server writes", p.count)),
    ("broker messages published / event", lambda p: _per(p.broker, "published", p.count)),
    ("broker messages delivered / event", lambda p: _per(p.broker, "delivered", p.count)),
    ("broker messages redelivered / event", lambda p: _per(p.broker, "redelivered", p.count)),
)


def format_report(report: Report) -> str:
    """The plain-text table the run prints."""
    lines = [
        "m8 event store benchmark",
        f"  events       {report.events}, concurrency {report.concurrency}",
        f"  mongodb      {report.mongodb}",
        f"  rabbitmq     {report.rabbitmq}",
        f"  event doc    {report.document_bytes} bytes of BSON",
        "",
        f"{'figure':<42}{'raw insert':>12}{'full path':>12}",
    ]
    lines += [
        f"{name:<42}{figure(report.raw):>12}{figure(report.full):>12}" for name, figure in FIGURES
    ]
    lines += [
        "",
        "raw insert: insert_one into a collection with the indexes of `events`.",
        "full path: MongoEventRecorder.append -> OutboxRelay -> m8.events -> EventConsumer"
        " with MongoInbox.",
        "mongodb commands and documents: this process's commands (pymongo monitoring);"
        " opcounters: the whole server.",
        "broker: the management API's counters of m8.events and of the consumer's queue.",
    ]
    if not report.full.broker_settled:
        lines.append(
            f"note: broker counters still changed after {STATS_LIMIT_SECONDS:.0f} s;"
            " they may be low."
        )
    lines.append("Figures are printed, never asserted.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.eventstore",
        description="Measure raw MongoDB inserts and the event store's path end to end.",
    )
    parser.add_argument("--events", type=int, default=2000, help="events per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent writers")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before the run gives up"
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.concurrency < 1:
        parser.error("--events and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Starts the servers, runs the benchmark, prints the table; cleans up in any case."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="m8-bench-") as workdir:
        try:
            services = local_services(Settings(), Path(workdir))
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            report = asyncio.run(run(services, args.events, args.concurrency, args.timeout))
        except TimeoutError:
            print(
                f"error: the benchmark did not finish within {args.timeout:.0f} s", file=sys.stderr
            )
            return 1
        finally:
            services.stop()
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
