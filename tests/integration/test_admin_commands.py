"""`m8 admin`: re-driving dead letters, status and read models, on the real broker (a
virtual host of the test's own) and the real event store, with a real reactor."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from prometheus_client import generate_latest

from m8.api.admin import queue_spec, redrive, relay_lag, status
from m8.api.metrics import ApiMetrics
from m8.api.projections import UPLOADS
from m8.config import Settings
from m8.devservices import Services
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.messaging.topology import reactor_queue
from tests.integration.test_upstream_adapters import VaultUpstream
from tests.servers import Broker, Vault
from tests.support.events import eventually
from tests.support.uploads import (
    ReactorKeys,
    Reactors,
    Sent,
    Uploads,
    declare_reactor_queues,
    secret_value,
)

STORE = "vault-main"
QUEUE = reactor_queue("vault")
M8 = Path(sys.executable).with_name("m8")


@pytest.fixture
async def reactors(
    recorder: MongoEventRecorder,
    amqp: AmqpBroker,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    vault: Vault,
    state_dir: Path,
) -> AsyncIterator[Reactors]:
    """A vault store in the catalog whose credentials entry the reactors lack at first, so
    that its uploads fail (`store_misconfigured`) and are dead-lettered."""
    await declare_reactor_queues(amqp)
    keys = ReactorKeys.create(state_dir)
    uploads = await Uploads.create(recorder, keys, state_dir)
    await uploads.register_store(STORE, "vault", _vault_config(vault))
    running = Reactors.create(uploads, keys, broker, services["mongodb"].url, mongo_db_name)
    running.use_credentials({})
    yield running
    await running.stop()


def _vault_config(vault: Vault) -> dict[str, Any]:
    return {"address": vault.addr, "mount": vault.mount, "path_prefix": vault.prefix}


def _environment(broker: Broker, services: Services, database: str) -> dict[str, str]:
    """An operator's: the administrator's broker URL in the test's virtual host."""
    return {
        **os.environ,
        "M8_AMQP_URL": broker.url,
        "M8_AMQP_MANAGEMENT_URL": broker.management_url,
        "M8_MONGODB_URI": services["mongodb"].url,
        "M8_MONGODB_DATABASE": database,
        "M8_LOG_FORMAT": "console",
    }


def _m8(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(M8), "admin", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def _dead_letters(amqp: AmqpBroker) -> int:
    channel = await amqp.connection.channel()
    try:
        queue = await channel.declare_queue(QUEUE.dead_letter_queue, passive=True)
        assert queue.declaration_result.message_count is not None
        return int(queue.declaration_result.message_count)
    finally:
        await channel.close()


async def _failed_and_dead_lettered(
    reactors: Reactors, amqp: AmqpBroker, sent: Sent, n: int
) -> None:
    settled = await reactors.uploads.settled(sent)
    assert (settled.status, settled.reason) == ("failed", "store_misconfigured")

    async def dead() -> bool:
        return await _dead_letters(amqp) == n

    await eventually(dead)


async def test_a_dead_lettered_upload_is_redriven_and_stored_and_one_whose_key_expired_stays(
    reactors: Reactors,
    amqp: AmqpBroker,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    vault: Vault,
) -> None:
    uploads = reactors.uploads
    await reactors.start("vault")
    expired = await uploads.upload(STORE, "team/expired", secret_value())
    await _failed_and_dead_lettered(reactors, amqp, expired, 1)
    assert await uploads.expire_keys() == 1
    value = secret_value()
    failed = await uploads.upload(STORE, "team/redriven", value)
    await _failed_and_dead_lettered(reactors, amqp, failed, 2)
    await reactors.stop_reactors()
    env = _environment(broker, services, mongo_db_name)

    # Status shows the dead letters (through the command an operator runs).
    shown = _m8(env, "status", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    queues = {q["queue"]: q for q in json.loads(shown.stdout)["queues"]}
    assert queues[QUEUE.name]["dead_letters"] == 2
    assert queues[QUEUE.name]["dead_letter_queue"] == QUEUE.dead_letter_queue

    table = _m8(env, "status")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(QUEUE.name))
    assert row.split()[-2:] == [QUEUE.dead_letter_queue, "2"]

    # A dry run judges both and moves neither.
    dry = _m8(env, "redrive", QUEUE.dead_letter_queue, "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    judged = {
        v["upload_id"]: (v["outcome"], v["reason"]) for v in json.loads(dry.stdout)["verdicts"]
    }
    assert judged == {
        expired.upload_id: ("refused", "key_expired"),
        failed.upload_id: ("would_move", None),
    }

    async def both_still_dead() -> bool:
        return await _dead_letters(amqp) == 2

    await eventually(both_still_dead)
    ready = await _ready(amqp)
    assert ready == 0

    # The re-drive moves the one that can succeed, with its history, and keeps the other.
    report = await redrive(broker.url, uploads.recorder, queue_spec(QUEUE.name))
    assert [
        (v.upload_id, v.outcome, v.reason) for v in report.verdicts if v.outcome != "moved"
    ] == [(expired.upload_id, "refused", "key_expired")]
    assert [v.upload_id for v in report.verdicts if v.outcome == "moved"] == [failed.upload_id]
    copy = await _get(amqp)
    assert copy.message_id == failed.event.event_id
    assert copy.type == "SecretUploadRequested"
    assert copy.correlation_id == failed.event.metadata.correlation_id
    assert copy.headers is not None
    assert copy.headers["m8-redriven"] == 1
    deaths: Any = copy.headers["x-death"]
    assert deaths[0]["queue"] == QUEUE.name
    assert json.loads(copy.body)["data"]["upload_id"] == failed.upload_id
    await copy.nack(requeue=True)

    async def one_dead() -> bool:
        return await _dead_letters(amqp) == 1

    await eventually(one_dead)

    # Fixed (the credentials entry), the reactor stores the re-driven upload.
    reactors.use_credentials({STORE: {**_vault_config(vault), "token": vault.token}})
    await reactors.start("vault")
    stored = await uploads.settled(failed, statuses=frozenset({"stored"}))
    assert stored.status == "stored"
    assert VaultUpstream(vault).value(failed.request.path) == value
    assert (await uploads.state(expired)).status == "failed"
    assert await _dead_letters(amqp) == 1


async def _ready(amqp: AmqpBroker) -> int:
    channel = await amqp.connection.channel()
    try:
        queue = await channel.declare_queue(QUEUE.name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def _get(amqp: AmqpBroker) -> aio_pika.abc.AbstractIncomingMessage:
    channel = await amqp.channel()
    queue = await channel.get_queue(QUEUE.name)
    async with asyncio.timeout(30):
        while (message := await queue.get(fail=False)) is None:
            await asyncio.sleep(0.1)
    return message


async def test_status_counts_pending_uploads_and_rebuild_restores_the_read_models(
    reactors: Reactors,
    amqp: AmqpBroker,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
) -> None:
    uploads = reactors.uploads
    pending = await uploads.upload(STORE, "team/waiting", secret_value())
    db = uploads.recorder.db
    env = _environment(broker, services, mongo_db_name)
    rebuilt = _m8(env, "rebuild-projections")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "1 secrets" in rebuilt.stdout
    document = await db[UPLOADS].find_one({"_id": pending.upload_id})
    assert document is not None
    assert document["status"] == "pending"

    settings = Settings(
        amqp_url=broker.url,
        amqp_management_url=broker.management_url,
        mongodb_uri=services["mongodb"].url,
        mongodb_database=mongo_db_name,
    )

    async def relayed() -> bool:
        lag, _ = await relay_lag(db, datetime.now(UTC))
        return {r.service: r.unpublished for r in lag}["api"] == 0

    # The API's stand-in relay publishes the catalog and the request.
    await eventually(relayed)
    found = await status(settings, db, uploads.recorder)
    assert found.oldest_pending is not None
    assert found.oldest_pending.upload_id == pending.upload_id
    assert {p.store_type: p.pending for p in found.pending}["vault"] == 1
    assert found.undecodable_events == 0
    assert {q.queue: q.ready for q in found.queues}[QUEUE.name] == 1

    metrics = ApiMetrics()
    await metrics.refresh_pending_uploads(db, uploads.recorder)
    exported = generate_latest(metrics.registry).decode()
    assert 'm8_uploads_pending{store_type="vault"} 1.0' in exported
    assert 'm8_uploads_pending{store_type="aws"} 0.0' in exported
    assert 'm8_uploads_oldest_pending_age_seconds{store_type="aws"} 0.0' in exported
