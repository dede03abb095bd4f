"""`m8 admin`: an operator's commands on a running m8 (docs/operations.md).

- `redrive QUEUE`: moves dead letters from `m8.dead.<queue>` back to their queue, those
  that would not fail again for the same reason;
- `rebuild-projections`: recomputes the API's read models from the event store;
- `status`: queues and dead-letter queues, the outbox relays' lag, pending uploads.

Settings come from M8_* variables as the services read them (m8.config): M8_AMQP_URL with
an administrator's broker user (one that may read the dead-letter queues and publish to
`m8.handback`), M8_AMQP_MANAGEMENT_URL (the unacked counts of `status`; its user is the
AMQP URL's), M8_MONGODB_URI and M8_MONGODB_DATABASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import httpx
import typer
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from m8.api.metrics import PendingUploads, pending_uploads
from m8.api.projections import UPLOADS, SecretReadModels
from m8.config import Settings, SettingsError, load_settings
from m8.domain import Secret, UploadKey
from m8.domain.events import SecretUploadRequested
from m8.eventsourcing import (
    EventRecorder,
    EventStoreUnavailable,
    Metadata,
    NotRecorded,
    StoredEvent,
    UnknownEventType,
)
from m8.eventstore import EVENTS, MongoEventRecorder
from m8.eventstore.mongo import Document, connect_database
from m8.messaging.consumer import message_copy
from m8.messaging.permissions import owner, services
from m8.messaging.topology import HANDBACK_EXCHANGE, QueueSpec, consumer_queues
from m8.protocol.status import FINAL_OUTCOMES

log = logging.getLogger(__name__)

app = typer.Typer(
    help="Operator commands: re-drive dead letters, rebuild read models, status "
    "(settings from M8_* variables, with an administrator's broker user).",
    no_args_is_help=True,
)

# How often a message was re-driven from its dead-letter queue (a header of the copy).
REDRIVEN_HEADER = "m8-redriven"
# The quorum queue's count of this delivery from the dead-letter queue: not the message's.
_DELIVERY_COUNT_HEADER = "x-delivery-count"
CONFIRM_TIMEOUT = 10.0


class Output(StrEnum):
    table = "table"
    json = "json"


class UnknownQueue(ValueError):
    """A name that is neither one of m8's consumer queues nor one's dead-letter queue."""


def queue_spec(name: str) -> QueueSpec:
    """The consumer queue `name` names: itself, or the one whose dead-letter queue it is."""
    for spec in consumer_queues():
        if name in (spec.name, spec.dead_letter_queue):
            return spec
    known = ", ".join(spec.name for spec in consumer_queues())
    raise UnknownQueue(f"no queue {name!r}: one of {known} (or its m8.dead.* queue)")


# ---- redrive ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What `redrive` did with one dead letter (ids and fixed codes only)."""

    message_id: str | None
    event_type: str | None
    upload_id: str | None
    # moved | refused | would_move (--dry-run) | not_taken (the broker refused the copy)
    outcome: str
    reason: str | None = None


@dataclass
class RedriveReport:
    """A re-drive's result; `left`: messages in the dead-letter queue afterwards."""

    queue: str
    dead_letter_queue: str
    dry_run: bool
    verdicts: list[Verdict] = field(default_factory=list)
    left: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for v in self.verdicts if v.outcome == outcome)


async def refusal(
    recorder: EventRecorder, body: bytes, now: datetime
) -> tuple[StoredEvent | None, str | None]:
    """The event a dead letter carries (None: it does not decode) and why it would fail
    again for the same reason, or None if it may go back:

    - `undecodable`, `not_recorded`: poison, dead-lettered at once again (consumers act
      on the event store's copy of an event only);
    - for an upload request: `already_stored|rejected|superseded` (its outcome is final),
      or the key rule's reason (`key_expired`, `key_destroyed`, `key_used`,
      `binding_mismatch`: m8.domain.UploadKey.refusal), which the reactor would reject.
    """
    try:
        message = StoredEvent.from_json(json.loads(body))
    except (ValueError, KeyError, TypeError):
        return None, "undecodable"
    try:
        stored, events = await recorder.recorded(message)
    except NotRecorded:
        return message, "not_recorded"
    if stored.event_type != SecretUploadRequested.event_type:
        return stored, None
    try:
        request = stored.decode()
        assert isinstance(request, SecretUploadRequested)
        upload = Secret.replay(stored.aggregate_id, (e.decode() for e in events)).upload(
            request.upload_id
        )
        key_events = await recorder.load(UploadKey.aggregate_type, request.key_id)
        key = UploadKey.replay(request.key_id, (e.decode() for e in key_events))
    except (UnknownEventType, TypeError, KeyError, AssertionError):
        return stored, "undecodable"
    if upload.status in FINAL_OUTCOMES:
        return stored, f"already_{upload.status}"
    refused = key.refusal(request.upload_id, request.store, request.path, now)
    return stored, None if refused is None else refused.reason.value


def redriven_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The message to put back: body, ids, type and headers (the broker's `x-death`
    history among them) kept, `m8-redriven` counted up."""
    headers = {k: v for k, v in (message.headers or {}).items() if k != _DELIVERY_COUNT_HEADER}
    count = headers.get(REDRIVEN_HEADER)
    headers[REDRIVEN_HEADER] = (count if isinstance(count, int) else 0) + 1
    return message_copy(message, headers)


async def redrive(
    amqp_url: str,
    recorder: EventRecorder,
    spec: QueueSpec,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RedriveReport:
    """Moves up to `limit` dead letters of `spec`'s dead-letter queue back to `spec`'s
    queue, refusing those that would fail again (`refusal`); with `dry_run`, only judges.

    Each is taken unacked, its copy published through `m8.handback` (routed to that queue
    only) with publisher confirms, mandatory, and only then acked: a failure in between
    leaves a duplicate (which consumers absorb), never a loss. Refused ones, and all with
    `dry_run`, are held until the end and then returned to the dead-letter queue.
    """
    report = RedriveReport(spec.name, spec.dead_letter_queue, dry_run)
    async with _connection(amqp_url, "m8-admin-redrive") as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dead = await channel.declare_queue(spec.dead_letter_queue, passive=True)
        handback = await channel.get_exchange(HANDBACK_EXCHANGE)
        held: list[AbstractIncomingMessage] = []
        try:
            while limit is None or len(report.verdicts) < limit:
                message = await dead.get(no_ack=False, fail=False)
                if message is None:
                    break
                event, reason = await refusal(recorder, message.body, now())
                verdict = functools.partial(_verdict, message, event)
                if reason is not None or dry_run:
                    held.append(message)
                    report.verdicts.append(verdict("refused" if reason else "would_move", reason))
                    continue
                try:
                    async with asyncio.timeout(CONFIRM_TIMEOUT):
                        await handback.publish(
                            redriven_copy(message), routing_key=spec.name, mandatory=True
                        )
                except (DeliveryError, TimeoutError) as exc:
                    # Unroutable (no binding to m8.handback), refused (the queue is full) or
                    # not confirmed: it stays a dead letter.
                    held.append(message)
                    report.verdicts.append(verdict("not_taken", type(exc).__name__))
                    continue
                await message.ack()
                report.verdicts.append(verdict("moved"))
        finally:
            for message in held:
                try:
                    await message.nack(requeue=True)
                except (AMQPError, RuntimeError) as exc:
                    # The channel is gone: the broker returns what it had given us anyway.
                    log.warning("could not return a dead letter: %s", type(exc).__name__)
        report.left = await _depth(connection, spec.dead_letter_queue) or 0
    return report


def _verdict(
    message: AbstractIncomingMessage,
    event: StoredEvent | None,
    outcome: str,
    reason: str | None = None,
) -> Verdict:
    upload_id = event.data.get("upload_id") if event is not None else None
    return Verdict(
        message.message_id,
        event.event_type if event is not None else message.type,
        None if upload_id is None else str(upload_id),
        outcome,
        reason,
    )


# ---- rebuild-projections ----------------------------------------------------------------


async def rebuild_projections(recorder: EventRecorder) -> int:
    """Recomputes `rm_uploads` and `rm_secrets` from the event store over the current
    documents (which stay readable meanwhile); returns how many secrets."""
    return await SecretReadModels(recorder).refresh()


# ---- status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStatus:
    """One consumer queue and its dead-letter queue (None: unknown)."""

    queue: str
    ready: int | None
    unacked: int | None
    consumers: int | None
    dead_letter_queue: str
    dead_letters: int | None


@dataclass(frozen=True)
class RelayLag:
    """The events of one service stored and not yet published."""

    service: str
    unpublished: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class PendingStatus:
    """Pending uploads of one store type."""

    store_type: str
    pending: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class OldestPending:
    """The upload that has waited longest for an outcome."""

    upload_id: str
    store: str
    path: str
    requested_at: str
    age_seconds: float


@dataclass(frozen=True)
class Status:
    queues: list[QueueStatus]
    relay: list[RelayLag]
    undecodable_events: int
    pending: list[PendingStatus]
    oldest_pending: OldestPending | None


async def queue_status(amqp_url: str, management_url: str | None) -> list[QueueStatus]:
    """Every consumer queue of m8 with its dead-letter queue: ready messages and
    consumers from the broker itself (exact), unacked from the management API (None when
    it cannot be reached)."""
    unacked = await _unacked(amqp_url, management_url) if management_url else {}
    found = []
    async with _connection(amqp_url, "m8-admin-status") as connection:
        for spec in consumer_queues():
            queue = await _declared(connection, spec.name)
            found.append(
                QueueStatus(
                    spec.name,
                    None if queue is None else queue.message_count,
                    unacked.get(spec.name),
                    None if queue is None else queue.consumer_count,
                    spec.dead_letter_queue,
                    await _depth(connection, spec.dead_letter_queue),
                )
            )
    return found


async def relay_lag(db: AsyncDatabase[Document], now: datetime) -> tuple[list[RelayLag], int]:
    """Per service, the events stored and not yet published (one aggregate over the
    outbox index), and how many were set aside as undecodable."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"published": False}},
        {
            "$group": {
                "_id": {"a": "$aggregate_type", "t": "$type", "s": "$routing_suffix"},
                "count": {"$sum": 1},
                "oldest": {"$min": "$recorded_at"},
            }
        },
    ]
    lag: dict[str, tuple[int, datetime | None]] = {s: (0, None) for s in services()}
    with _mongo():
        groups = [doc async for doc in await db[EVENTS].aggregate(pipeline)]
        undecodable = await db[EVENTS].count_documents({"published": "undecodable"})
    for group in groups:
        kind = group["_id"]
        service = owner(_sample(kind["a"], kind["t"], kind.get("s"))) or "unowned"
        count, oldest = lag.get(service, (0, None))
        ages = [t for t in (oldest, group["oldest"]) if t is not None]
        lag[service] = (count + int(group["count"]), min(ages, default=None))
    return [
        RelayLag(service, count, _age(now, oldest)) for service, (count, oldest) in lag.items()
    ], undecodable


async def status(
    settings: Settings, db: AsyncDatabase[Document], recorder: EventRecorder
) -> Status:
    """What `m8 admin status` shows."""
    now = datetime.now(UTC)
    queues = await queue_status(settings.amqp_url, settings.amqp_management_url)
    relay, undecodable = await relay_lag(db, now)
    with _mongo():
        pending: dict[str, PendingUploads] = await pending_uploads(db, recorder)
        oldest = await db[UPLOADS].find_one(
            {"status": "pending"}, sort=[("requested_at", ASCENDING)]
        )
    return Status(
        queues,
        relay,
        undecodable,
        [PendingStatus(t, p.count, p.oldest_age(now)) for t, p in sorted(pending.items())],
        None
        if oldest is None
        else OldestPending(
            str(oldest["_id"]),
            str(oldest["store"]),
            str(oldest["path"]),
            oldest["requested_at"].isoformat(),
            _age(now, oldest["requested_at"]),
        ),
    )


# ---- the commands -----------------------------------------------------------------------


@app.command("redrive")
def redrive_command(
    queue: Annotated[
        str, typer.Argument(help="the queue (m8.reactor.vault) or its dead-letter queue")
    ],
    limit: Annotated[
        int | None, typer.Option(min=1, help="look at this many dead letters at most")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="judge every dead letter, move none")
    ] = False,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """Moves dead letters back to their queue, refusing those that would fail again."""
    try:
        spec = queue_spec(queue)
    except UnknownQueue as exc:
        _fail(str(exc), 2)
    settings = _settings()

    async def run(db: AsyncDatabase[Document], recorder: EventRecorder) -> RedriveReport:
        return await redrive(settings.amqp_url, recorder, spec, limit=limit, dry_run=dry_run)

    report = _run(settings, run)
    if output is Output.json:
        typer.echo(json.dumps(dataclasses.asdict(report), indent=2))
        return
    rows = [
        [v.outcome, v.message_id or "-", v.event_type or "-", v.upload_id or "-", v.reason or ""]
        for v in report.verdicts
    ]
    if rows:
        typer.echo(_table(["OUTCOME", "MESSAGE ID", "EVENT", "UPLOAD", "REASON"], rows))
        typer.echo("")
    moved = "would move" if dry_run else "moved"
    counts = report.count("would_move") if dry_run else report.count("moved")
    summary = [
        [moved, str(counts), f"to {report.queue}"],
        ["refused", str(report.count("refused")), "would fail again: left in the DLQ"],
    ]
    if report.count("not_taken"):
        summary.append(["not taken", str(report.count("not_taken")), "left in the DLQ"])
    summary.append(["left", str(report.left), f"in {report.dead_letter_queue}"])
    typer.echo(_table(["", "COUNT", ""], summary))


@app.command("rebuild-projections")
def rebuild_projections_command() -> None:
    """Recomputes the API's read models (uploads, secrets) from the event store."""
    settings = _settings()

    async def run(db: AsyncDatabase[Document], recorder: EventRecorder) -> int:
        return await rebuild_projections(recorder)

    count = _run(settings, run)
    typer.echo(f"read models recomputed: {count} secrets")


@app.command("status")
def status_command(
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.table,
) -> None:
    """Queues, dead-letter queues, the outbox relays' lag, pending uploads."""
    settings = _settings()

    async def run(db: AsyncDatabase[Document], recorder: EventRecorder) -> Status:
        return await status(settings, db, recorder)

    found = _run(settings, run)
    if output is Output.json:
        typer.echo(json.dumps(dataclasses.asdict(found), indent=2))
        return
    typer.echo(
        _table(
            ["QUEUE", "READY", "UNACKED", "CONSUMERS", "DEAD-LETTER QUEUE", "DEAD LETTERS"],
            [
                [
                    q.queue,
                    _n(q.ready),
                    _n(q.unacked),
                    _n(q.consumers),
                    q.dead_letter_queue,
                    _n(q.dead_letters),
                ]
                for q in found.queues
            ],
        )
    )
    typer.echo("")
    typer.echo(
        _table(
            ["SERVICE", "UNPUBLISHED EVENTS", "OLDEST (S)"],
            [[r.service, str(r.unpublished), f"{r.oldest_age_seconds:.0f}"] for r in found.relay],
        )
    )
    if found.undecodable_events:
        typer.echo(f"undecodable events set aside: {found.undecodable_events}")
    typer.echo("")
    typer.echo(
        _table(
            ["STORE TYPE", "PENDING UPLOADS", "OLDEST (S)"],
            [[p.store_type, str(p.pending), f"{p.oldest_age_seconds:.0f}"] for p in found.pending],
        )
    )
    oldest = found.oldest_pending
    if oldest is not None:
        typer.echo(
            f"oldest pending upload: {oldest.upload_id} ({oldest.store}:{oldest.path}), "
            f"requested {oldest.requested_at}, {oldest.age_seconds:.0f} s ago"
        )


# ---- helpers ----------------------------------------------------------------------------

T = TypeVar("T")


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"m8 admin: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = load_settings(Settings)
    except SettingsError as exc:
        _fail(str(exc), 2)
    if not settings.mongodb_uri:
        _fail("M8_MONGODB_URI is not set: where is MongoDB?", 2)
    return settings


def _run(
    settings: Settings,
    command: Callable[[AsyncDatabase[Document], EventRecorder], Coroutine[Any, Any, T]],
) -> T:
    """Runs `command` on the event store of `settings`; a server that fails or refuses is
    a message and exit 1, never a traceback (which could carry a URL)."""

    async def main() -> T:
        assert settings.mongodb_uri is not None
        db = await connect_database(settings.mongodb_uri, settings.mongodb_database)
        try:
            return await command(db, MongoEventRecorder(db))
        finally:
            await db.client.close()

    try:
        return asyncio.run(main())
    except EventStoreUnavailable as exc:
        _fail(f"the event store failed: {exc}")
    except (AMQPError, OSError, aio_pika.exceptions.AMQPException) as exc:
        _fail(f"RabbitMQ refused or failed: {type(exc).__name__}")


@contextlib.asynccontextmanager
async def _connection(amqp_url: str, name: str) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": name})
    try:
        yield connection
    finally:
        await connection.close()


async def _declared(connection: AbstractConnection, name: str) -> Any | None:
    """The broker's declare-ok of queue `name` (message and consumer counts), or None if
    there is no such queue. A channel of its own: a missing queue closes it."""
    try:
        async with connection.channel() as probe:
            queue = await probe.declare_queue(name, passive=True)
            return queue.declaration_result
    except ChannelNotFoundEntity:
        return None


async def _depth(connection: AbstractConnection, name: str) -> int | None:
    declared = await _declared(connection, name)
    return None if declared is None else int(declared.message_count)


async def _unacked(amqp_url: str, management_url: str) -> dict[str, int]:
    """Unacked messages per queue from the management API ({} if it cannot be asked)."""
    parts = urlsplit(amqp_url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
    url = f"{management_url.rstrip('/')}/api/queues/{quote(vhost, safe='')}"
    try:
        async with httpx.AsyncClient(auth=auth, timeout=10) as client:
            answer = await client.get(url, params={"columns": "name,messages_unacknowledged"})
            answer.raise_for_status()
            return {
                str(q["name"]): int(q.get("messages_unacknowledged") or 0) for q in answer.json()
            }
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log.warning("the management API gave no unacked counts: %s", type(exc).__name__)
        return {}


@contextlib.contextmanager
def _mongo() -> Any:
    try:
        yield
    except PyMongoError as exc:
        raise EventStoreUnavailable(f"MongoDB failed ({type(exc).__name__})") from exc


def _sample(aggregate_type: str, event_type: str, routing_suffix: str | None) -> StoredEvent:
    """An event of this kind, for `owner` (which service publishes it)."""
    return StoredEvent(
        event_id="0" * 24,
        aggregate_type=aggregate_type,
        aggregate_id="-",
        version=1,
        event_type=event_type,
        event_version=1,
        data={},
        metadata=Metadata(actor="m8-admin", correlation_id="-"),
        recorded_at=datetime.now(UTC),
        routing_suffix=routing_suffix,
        on_bus=True,
    )


def _age(now: datetime, then: datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max((now - then).total_seconds(), 0.0)


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(
            str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)
        ).rstrip()
        for line in lines
    )
