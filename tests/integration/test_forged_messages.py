"""Messages published straight to the broker, that no service recorded, change nothing.

Whoever can publish to RabbitMQ (a leaked broker credential, the broker itself) must not
get m8 to destroy an upload key, which would turn an upload in flight into a rejection
with a false audit record, or to redact a ciphertext. Consumers act on the event store's
copy of an event only; a message naming an event it does not hold is dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from m8.devservices import Services
from m8.domain import Secret, UploadKey, secret_id
from m8.domain.events import SecretStored, SecretUploadRejected, UploadKeyDestroyed
from m8.eventsourcing import DomainEvent, Metadata, StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.messaging import Broker as AmqpBroker
from m8.messaging import QueueSpec
from m8.messaging.topology import API_PROJECTIONS_QUEUE, KEYROTATOR_QUEUE
from m8.runtime import Runtime
from tests.integration.test_upstream_adapters import VaultUpstream
from tests.servers import Broker, Vault
from tests.support.api import VAULT_STORE, RunningApi, api_with_rotator, start_rotator
from tests.support.events import eventually
from tests.support.uploads import ReactorKeys, Reactors, Sent, Uploads, secret_value

FORGER = Metadata(actor="reactor:vault", correlation_id="corr-forged")
STORE = "vault-forged"
PATH = "team/db/password"


async def _dead_lettered(amqp: AmqpBroker, spec: QueueSpec, message_id: str) -> None:
    """Waits until the message `message_id` is in the dead-letter queue of `spec`."""
    channel = await amqp.channel()
    dead = await channel.get_queue(spec.dead_letter_queue)
    async with asyncio.timeout(30):
        while True:
            message = await dead.get(fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            if message.message_id == message_id:
                return


async def _forge(
    amqp: AmqpBroker, aggregate_type: str, aggregate_id: str, event: DomainEvent
) -> str:
    """Publishes `event` as if recorded at version 99 of the aggregate; never stored."""
    forged = StoredEvent.new(aggregate_type, aggregate_id, 99, event, FORGER)
    await amqp.publish_event(forged)
    return forged.event_id


async def _key_is_intact(recorder: MongoEventRecorder, key_id: str) -> bool:
    sealed = await recorder.db["upload_keys"].find_one({"_id": key_id})
    events = [e.event_type for e in await recorder.load(UploadKey.aggregate_type, key_id)]
    return sealed is not None and UploadKeyDestroyed.event_type not in events


@pytest.fixture
async def reactors(
    recorder: MongoEventRecorder,
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    vault: Vault,
    state_dir: Path,
) -> AsyncIterator[Reactors]:
    """A vault store on the real OpenBao, its reactor's keys, no reactor running yet."""
    keys = ReactorKeys.create(state_dir)
    uploads = await Uploads.create(recorder, keys, state_dir)
    config = {"address": vault.addr, "mount": vault.mount, "path_prefix": vault.prefix}
    await uploads.register_store(STORE, "vault", config)
    running = Reactors.create(uploads, keys, broker, services["mongodb"].url, mongo_db_name)
    # The entry describes the store exactly as registered (the reactor pins it).
    running.use_credentials({STORE: {**config, "token": vault.token}})
    yield running
    await running.stop()


@pytest.fixture
async def rotator(
    reactors: Reactors, broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    """The real key rotator, consuming outcomes; it has the keys of the rotator that
    `reactors.uploads` drives (one deployment: the same KEKs and master key)."""
    directory = tmp_path / "rotator"
    directory.mkdir()
    keys = reactors.uploads.rotator_settings
    runtime = await start_rotator(
        broker,
        services,
        mongo_db_name,
        directory,
        keyrotator_kek_files=keys.keyrotator_kek_files,
        keyrotator_master_key_file=keys.keyrotator_master_key_file,
    )
    yield runtime
    await runtime.close()


def _outcome(sent: Sent, kind: str) -> DomainEvent:
    fields = {
        "upload_id": sent.upload_id,
        "store": STORE,
        "store_type": "vault",
        "path": PATH,
    }
    if kind == "stored":
        return SecretStored(**fields, upstream_version="1", fingerprint="fp1:forged")
    return SecretUploadRejected(**fields, reason="bad_mac", detail="forged")


@pytest.mark.parametrize("kind", ["stored", "rejected"])
async def test_a_forged_outcome_for_an_upload_in_flight_destroys_nothing_and_it_is_still_stored(
    kind: str,
    reactors: Reactors,
    rotator: Runtime,
    amqp: AmqpBroker,
    recorder: MongoEventRecorder,
    vault: Vault,
) -> None:
    value = secret_value()
    sent = await reactors.uploads.upload(STORE, PATH, value)

    forged = await _forge(amqp, Secret.aggregate_type, sent.secret_id, _outcome(sent, kind))
    await _dead_lettered(amqp, KEYROTATOR_QUEUE, forged)

    assert await _key_is_intact(recorder, sent.request.key_id)
    assert (await reactors.uploads.state(sent)).status == "pending"
    await reactors.start("vault")
    settled = await reactors.uploads.settled(sent)
    assert settled.status == "stored"
    assert VaultUpstream(vault).value(PATH) == value
    # The true outcome still destroys the key, as used.
    await eventually(lambda: _destroyed_as(recorder, sent.request.key_id, "used"))


async def _destroyed_as(recorder: MongoEventRecorder, key_id: str, reason: str) -> bool:
    events = await recorder.load(UploadKey.aggregate_type, key_id)
    return any(e.event_type == "UploadKeyDestroyed" and e.data["reason"] == reason for e in events)


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with api_with_rotator(broker, services, mongo_db_name, tmp_path) as running:
        await running.add_store(VAULT_STORE)
        yield running


async def test_a_forged_upload_key_destroyed_redacts_nothing(
    api: RunningApi, amqp: AmqpBroker
) -> None:
    key = await api.issue_key("vault-a", "team-a/db/password")
    body = api.upload_body(key)
    assert (await api.call("POST", "/v1/secrets", json=body)).status_code == 202

    destroyed = UploadKeyDestroyed(key_id=key.key_id, reason="used")
    forged = await _forge(amqp, UploadKey.aggregate_type, key.key_id, destroyed)
    await _dead_lettered(amqp, API_PROJECTIONS_QUEUE, forged)

    [requested] = await api.recorder.load("secret", secret_id("vault-a", "team-a/db/password"))
    assert requested.data["ciphertext"] == body["ciphertext"]
    assert await _key_is_intact(api.recorder, key.key_id)


@pytest.mark.parametrize("kind", ["stored", "rejected"])
async def test_a_forged_final_outcome_redacts_nothing_and_projects_nothing(
    kind: str, api: RunningApi, amqp: AmqpBroker
) -> None:
    key = await api.issue_key("vault-a", "team-a/db/password")
    body = api.upload_body(key)
    assert (await api.call("POST", "/v1/secrets", json=body)).status_code == 202
    where = secret_id("vault-a", "team-a/db/password")
    fields = {
        "upload_id": body["upload_id"],
        "store": "vault-a",
        "store_type": "vault",
        "path": "team-a/db/password",
    }
    outcome: DomainEvent = (
        SecretStored(**fields, upstream_version="1", fingerprint="fp1:forged")
        if kind == "stored"
        else SecretUploadRejected(**fields, reason="bad_mac", detail="forged")
    )

    forged = await _forge(amqp, Secret.aggregate_type, where, outcome)
    await _dead_lettered(amqp, API_PROJECTIONS_QUEUE, forged)

    [requested] = await api.recorder.load("secret", where)
    assert requested.data["ciphertext"] == body["ciphertext"]
    status = await api.call("GET", f"/v1/uploads/{body['upload_id']}")
    assert status.json()["status"] == "pending"
