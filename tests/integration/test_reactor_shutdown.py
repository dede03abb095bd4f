"""A stopping reactor hands the work it cannot finish back to the broker, and a message
handed back by shutdowns alone never reaches the dead-letter queue."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from m8.domain import secret_id
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.messaging.topology import reactor_queue
from m8.reactors import path_leases
from tests.integration.test_reactor import VAULT_STORE, reactors, upstreams
from tests.integration.test_upstream_adapters import Upstream
from tests.support.events import eventually
from tests.support.uploads import Reactors, secret_value

__all__ = ["reactors", "upstreams"]

PATH = "team/db/handed-back"


async def _hold_the_path(recorder: MongoEventRecorder, path: str) -> None:
    """Another reactor holds `path`, so a reactor given its upload waits with it in hand."""
    await recorder.db[path_leases.COLLECTION].insert_one(
        {
            "_id": secret_id(VAULT_STORE, path),
            "holder": "another-upload",
            "owner": "another-reactor",
            "until": datetime.now(UTC) + timedelta(hours=1),
        }
    )


async def _free_the_path(recorder: MongoEventRecorder, path: str) -> None:
    await recorder.db[path_leases.COLLECTION].update_one(
        {"_id": secret_id(VAULT_STORE, path)}, {"$set": {"until": path_leases.GIVEN_BACK}}
    )


async def _dead_letters(amqp: AmqpBroker) -> int:
    channel = await amqp.channel()
    dead = await channel.declare_queue(reactor_queue("vault").dead_letter_queue, passive=True)
    count = dead.declaration_result.message_count
    await channel.close()
    return count or 0


async def test_an_upload_in_hand_at_every_shutdown_goes_back_and_is_stored_at_last(
    reactors: Reactors,
    amqp: AmqpBroker,
    recorder: MongoEventRecorder,
    upstreams: dict[str, Upstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="m8.reactors.reactor")
    value = secret_value()
    sent = await reactors.uploads.upload(VAULT_STORE, PATH, value)
    await _hold_the_path(recorder, PATH)
    # More shutdowns than the queue's delivery limit: returned to the queue each time,
    # the message would have been dead-lettered.
    for _ in range(reactor_queue("vault").delivery_limit + 1):
        caplog.clear()
        await reactors.start("vault")

        async def waiting() -> bool:
            return "waiting for another upload to the same path" in caplog.text

        await eventually(waiting, timeout=60)
        await reactors.stop_reactors()
        assert await _dead_letters(amqp) == 0
        assert (await reactors.uploads.state(sent)).status == "pending"

    await _free_the_path(recorder, PATH)
    await reactors.start("vault")
    assert (await reactors.uploads.settled(sent)).status == "stored"
    assert upstreams["vault"].value(PATH) == value
    assert upstreams["vault"].version_count(PATH) == 1
    assert await _dead_letters(amqp) == 0


async def test_a_reactor_process_told_to_stop_hands_back_its_upload_and_exits(
    reactors: Reactors,
    amqp: AmqpBroker,
    recorder: MongoEventRecorder,
    upstreams: dict[str, Upstream],
    state_dir: Path,
) -> None:
    path = "team/db/sigterm"
    value = secret_value()
    sent = await reactors.uploads.upload(VAULT_STORE, path, value)
    await _hold_the_path(recorder, path)
    log = state_dir / "reactor.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "m8.reactors.cli",
            "vault",
            # Waiting for its path longer than the stop's grace: the stop hands it back.
            env={**reactors.environment("vault"), "M8_REACTOR_PATH_WAIT_SECONDS": "600"},
            stdout=output,
            stderr=output,
        )
    try:

        async def waiting() -> bool:
            return "waiting for another upload to the same path" in log.read_text()

        await eventually(waiting, timeout=120)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert "handing back" in log.read_text()
    assert await _dead_letters(amqp) == 0
    assert (await reactors.uploads.state(sent)).status == "pending"
    await _free_the_path(recorder, path)
    await reactors.start("vault")
    assert (await reactors.uploads.settled(sent)).status == "stored"
    assert upstreams["vault"].value(path) == value
