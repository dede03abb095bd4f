"""A stopping reactor hands the work it cannot finish back to the broker, and a message
handed back by shutdowns alone never reaches the dead-letter queue."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

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
    # Another reactor holds the path, so every reactor started here waits with the upload
    # in hand until it is stopped.
    leases = recorder.db[path_leases.COLLECTION]
    await leases.insert_one(
        {
            "_id": secret_id(VAULT_STORE, PATH),
            "holder": "another-upload",
            "owner": "another-reactor",
            "until": datetime.now(UTC) + timedelta(hours=1),
        }
    )
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

    await leases.update_one(
        {"_id": secret_id(VAULT_STORE, PATH)}, {"$set": {"until": path_leases.GIVEN_BACK}}
    )
    await reactors.start("vault")
    assert (await reactors.uploads.settled(sent)).status == "stored"
    assert upstreams["vault"].value(PATH) == value
    assert upstreams["vault"].version_count(PATH) == 1
    assert await _dead_letters(amqp) == 0
