"""The key rotator on real RabbitMQ and MongoDB: issue, destroy, sweep, rotate, restart.

Each test runs the rotator in-process against its own virtual host and database, with key
files made by `m8 keys` in tmp_path, and talks to it the way the API does: RPC over the
broker, and outcome events appended to the event store and published by the outbox.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import VerifyKey
from typer.testing import CliRunner

from m8.client.profile import PinnedKey, Profile
from m8.client.upload import pin_endorsed_keys
from m8.crypto import (
    Kek,
    SealedUploadKey,
    SignedStatement,
    UnknownSigningKey,
    decode_verify_key,
    read_kek_file,
    unseal_upload_key,
    verify_statement,
)
from m8.devservices import Services
from m8.domain import CATALOG_ID, Secret, StoreCatalog, UploadKey, secret_id
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
)
from m8.eventsourcing import Metadata, StoredEvent
from m8.eventstore import MongoEventRecorder, Repository
from m8.keyrotator import KeyRotatorSettings, RotatorKeys, start
from m8.keyrotator.cli import keys_app
from m8.keyrotator.master_key import MasterKey
from m8.keyrotator.service import KeyRotator
from m8.messaging import Broker as AmqpBroker
from m8.messaging import EventConsumer, QueueSpec, RpcClient, RpcError, RpcTimeout
from m8.messaging.topology import RPC_KEYROTATOR_QUEUE
from m8.runtime import Runtime
from tests.servers import Broker
from tests.support.events import eventually

PATH = "team/db/password"
ADMIN = Metadata(actor="admin", correlation_id="corr-keyrotator-test")


@dataclass(frozen=True)
class KeyFiles:
    """Key files an operator made with `m8 keys`."""

    vault_kek: Path
    vault_public: Path
    master: Path


@pytest.fixture
def key_files(tmp_path: Path) -> KeyFiles:
    runner = CliRunner()
    made = runner.invoke(
        keys_app,
        ["generate-kek", "--store-type", "vault", "--kek-id", "vault-1", "--out", str(tmp_path)],
    )
    assert made.exit_code == 0, made.output
    made = runner.invoke(keys_app, ["generate-master-key", "--out", str(tmp_path / "master.json")])
    assert made.exit_code == 0, made.output
    return KeyFiles(
        tmp_path / "vault-1.kek.json", tmp_path / "vault-1.pub.json", tmp_path / "master.json"
    )


@dataclass
class Rotators:
    """Starts rotator processes (in this one) on the test's broker and database."""

    broker: Broker
    mongodb_uri: str
    database: str
    keys: KeyFiles
    running: list[Runtime] = field(default_factory=list)

    def settings(self, **overrides: Any) -> KeyRotatorSettings:
        values: dict[str, Any] = {
            "amqp_url": self.broker.url,
            "mongodb_uri": self.mongodb_uri,
            "mongodb_database": self.database,
            "keyrotator_kek_files": {"vault": [self.keys.vault_public]},
            "keyrotator_master_key_file": self.keys.master,
            "keyrotator_sweep_interval": timedelta(seconds=0.2),
            **overrides,
        }
        return KeyRotatorSettings(**values)

    async def start(self, **overrides: Any) -> tuple[Runtime, KeyRotator]:
        settings = self.settings(**overrides)
        runtime = await Runtime.start("keyrotator", settings)
        self.running.append(runtime)
        return runtime, await start(runtime, settings, RotatorKeys.load(settings))

    async def stop(self, runtime: Runtime) -> None:
        self.running.remove(runtime)
        await runtime.close()


@pytest.fixture
async def rotators(
    broker: Broker, services: Services, mongo_db_name: str, key_files: KeyFiles
) -> AsyncIterator[Rotators]:
    started = Rotators(broker, services["mongodb"].url, mongo_db_name, key_files)
    yield started
    for runtime in list(started.running):
        await started.stop(runtime)


@pytest.fixture
async def rpc(amqp: AmqpBroker) -> RpcClient:
    client = RpcClient(amqp)
    await client.start()
    return client


@pytest.fixture
def repository(recorder: MongoEventRecorder) -> Repository:
    return Repository(recorder)


async def register(repository: Repository, name: str, store_type: str = "vault") -> None:
    config = {"address": "http://vault:8200", "mount": "secret", "path_prefix": "m8/"}
    await repository.update(
        StoreCatalog, CATALOG_ID, lambda c: c.register(name, store_type, config), ADMIN
    )


async def issue(rpc: RpcClient, store: str | None = "main", path: str = PATH) -> SignedStatement:
    params = {"store": store, "path": path, "actor": "alice"}
    return SignedStatement.from_dict(
        await rpc.call(RPC_KEYROTATOR_QUEUE, "issue_upload_key", params)
    )


async def published(rpc: RpcClient) -> list[dict[str, Any]]:
    reply = await rpc.call(RPC_KEYROTATOR_QUEUE, "verify_keys", {})
    keys: list[dict[str, Any]] = reply["keys"]
    return keys


async def verify_keys(rpc: RpcClient) -> dict[str, VerifyKey]:
    return {k["signing_key_id"]: decode_verify_key(k["verify_key"]) for k in await published(rpc)}


async def record_outcome(
    repository: Repository, statement: SignedStatement, outcome: str
) -> StoredEvent:
    """What the API and a reactor record for one upload with this key: request, then outcome."""
    s = statement.statement
    upload = {
        "upload_id": str(uuid.uuid4()),
        "store": s.store_id,
        "store_type": "vault",
        "path": s.path,
    }
    secret = await repository.load(Secret, secret_id(s.store_id, s.path))
    secret.request_upload(
        SecretUploadRequested(
            **upload,
            key_id=s.key_id,
            client_public_key="AAAA",
            nonce="AAAA",
            ciphertext="AAAA",
            ciphertext_sha256="00",
            requested_by="alice",
        )
    )
    if outcome == "stored":
        secret.record_stored(SecretStored(**upload, upstream_version="1", fingerprint="fp1:x"))
    elif outcome == "rejected":
        secret.record_rejected(SecretUploadRejected(**upload, reason="mac", detail="bad MAC"))
    else:
        secret.record_failed(SecretStoreFailed(**upload, reason="upstream", detail="timeout"))
    return (await repository.save(secret, ADMIN))[-1]


async def destroyed_reason(repository: Repository, key_id: str) -> str | None:
    return (await repository.load(UploadKey, key_id)).destroyed


async def key_stored(recorder: MongoEventRecorder, key_id: str) -> bool:
    return await recorder.db["upload_keys"].find_one({"_id": key_id}) is not None


async def test_issued_key_verifies_and_is_destroyed_once_its_upload_is_stored(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    await rotators.start()

    signed = await issue(rpc, store=None)  # the default store
    statement = verify_statement(signed, await verify_keys(rpc))
    doc = await recorder.db["upload_keys"].find_one({"_id": statement.key_id})
    assert doc is not None
    assert (statement.store_id, statement.path, statement.kek_id) == ("main", PATH, "vault-1")
    assert (doc["store"], doc["store_type"], doc["path"]) == ("main", "vault", PATH)
    assert doc["expires_at"] == statement.expires_at
    # A reactor holding the KEK opens the sealed key, and it is the signed key's private half.
    kek = read_kek_file(rotators.keys.vault_kek)
    private = await _upload_private_key(recorder, kek, statement.key_id)
    assert bytes(PrivateKey(private).public_key) == statement.public_key
    key = await repository.load(UploadKey, statement.key_id)
    assert key.issued is not None
    assert key.issued.signing_key_id == signed.signing_key_id

    await record_outcome(repository, signed, "stored")

    await eventually(lambda: _not(key_stored(recorder, statement.key_id)))
    await eventually(lambda: _is(destroyed_reason(repository, statement.key_id), "used"))


async def test_rejected_upload_destroys_its_key_but_a_failed_one_keeps_it_for_a_redrive(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    await rotators.start()
    rejected, failed = await issue(rpc), await issue(rpc)

    failure = await record_outcome(repository, failed, "failed")
    await record_outcome(repository, rejected, "rejected")

    await eventually(
        lambda: _is(destroyed_reason(repository, rejected.statement.key_id), "rejected")
    )
    await eventually(lambda: _handled(recorder, failure.event_id))
    assert await key_stored(recorder, failed.statement.key_id)
    assert await destroyed_reason(repository, failed.statement.key_id) is None


async def test_expired_key_is_destroyed_by_the_sweep(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    await rotators.start(keyrotator_upload_key_lifetime=timedelta(seconds=1))

    statement = (await issue(rpc)).statement

    await eventually(lambda: _is(destroyed_reason(repository, statement.key_id), "expired"))
    assert not await key_stored(recorder, statement.key_id)
    [destroyed] = [
        e
        for e in await recorder.load("upload_key", statement.key_id)
        if e.event_type == "UploadKeyDestroyed"
    ]
    assert destroyed.recorded_at >= statement.expires_at


async def test_a_key_the_ttl_backstop_removed_while_no_rotator_ran_is_recorded_destroyed(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    first, _ = await rotators.start(keyrotator_upload_key_lifetime=timedelta(seconds=3))
    statement = (await issue(rpc)).statement
    await rotators.stop(first)
    # What the TTL index does an hour past the expiry: the sealed key goes, no event says so.
    await recorder.db["upload_keys"].delete_one({"_id": statement.key_id})

    await rotators.start()

    await eventually(lambda: _is(destroyed_reason(repository, statement.key_id), "expired"))
    assert datetime.now(UTC) >= statement.expires_at


async def test_statements_of_a_replaced_signing_key_verify_until_they_expire(
    rotators: Rotators, rpc: RpcClient, repository: Repository
) -> None:
    await register(repository, "main")
    await rotators.start(
        keyrotator_upload_key_lifetime=timedelta(seconds=4),
        keyrotator_signing_key_period=timedelta(seconds=1.5),
        keyrotator_signing_key_overlap=timedelta(seconds=0.5),
    )
    old = await issue(rpc)

    await eventually(lambda: _more_than_one_key(rpc))
    newer = await issue(rpc)
    keys = await published(rpc)

    assert newer.signing_key_id != old.signing_key_id
    assert datetime.now(UTC) < old.statement.expires_at
    verify_statement(old, await verify_keys(rpc))  # the replaced key still vouches for it
    [entry] = [k for k in keys if k["signing_key_id"] == old.signing_key_id]
    assert _parse_time(entry["retires_at"]) >= old.statement.expires_at

    # A client that pinned only the old key follows the rotation through its endorsement.
    client = Profile("http://m8", "token")
    client.pinned[old.signing_key_id] = PinnedKey(entry["verify_key"], entry["fingerprint"])
    assert newer.signing_key_id in pin_endorsed_keys(client, keys)

    await eventually(lambda: _withdrawn(rpc, old.signing_key_id), timeout=30)
    assert datetime.now(UTC) >= old.statement.expires_at
    with pytest.raises(UnknownSigningKey):
        verify_statement(
            old, await verify_keys(rpc), now=old.statement.expires_at - timedelta(seconds=1)
        )


async def test_two_rotators_starting_together_agree_on_one_signing_key(
    rotators: Rotators, recorder: MongoEventRecorder
) -> None:
    (_, first), (_, second) = await asyncio.gather(rotators.start(), rotators.start())

    one, two = await first.signing.current(), await second.signing.current()

    assert one.signing_key_id == two.signing_key_id
    assert await recorder.db["rotator_signing_keys"].count_documents({}) == 1


async def test_restarted_rotator_loses_no_issued_key_and_issues_no_duplicate(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    first, _ = await rotators.start()
    received: list[SignedStatement] = []
    done = asyncio.Event()

    async def client() -> None:
        while not done.is_set():
            try:
                received.append(await _issue_retrying_on_silence(rpc))
            except RpcTimeout:
                continue

    clients = [asyncio.create_task(client()) for _ in range(3)]
    await eventually(lambda: _at_least(received, 6))
    await rotators.stop(first)  # while the clients keep asking
    await rotators.start()
    target = len(received) + 6
    await eventually(lambda: _at_least(received, target), timeout=60)
    done.set()
    await asyncio.gather(*clients)

    key_ids = [s.statement.key_id for s in received]
    assert len(set(key_ids)) == len(key_ids)
    stored = {d["_id"] async for d in recorder.db["upload_keys"].find({}, {"_id": 1})}
    issued = {
        d["aggregate_id"]
        async for d in recorder.events.find({"type": "UploadKeyIssued"}, {"aggregate_id": 1})
    }
    assert set(key_ids) <= stored
    assert stored == issued  # each key with its event, never one without the other
    keys = await verify_keys(rpc)  # the restarted rotator still vouches for the old statements
    for signed in received:
        verify_statement(signed, keys)


async def test_bad_requests_get_a_clear_error_and_store_no_key(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await rotators.start()
    no_store = {"store": None, "path": PATH, "actor": "a"}
    assert await _refusal(rpc, no_store, "an admin must add one") == ("no_default_store", True)
    await register(repository, "main")
    await register(repository, "old")
    await register(repository, "cloud", "aws")
    await repository.update(StoreCatalog, CATALOG_ID, lambda c: c.deactivate("old"), ADMIN)
    refusals: list[tuple[dict[str, Any], str, str]] = [
        ({"store": "nope", "path": PATH, "actor": "a"}, "unknown_store", "no store named 'nope'"),
        ({"store": "old", "path": PATH, "actor": "a"}, "store_inactive", "'old' is inactive"),
        ({"store": "cloud", "path": PATH, "actor": "a"}, "no_kek", "m8 keys generate-kek"),
        ({"store": "main", "path": "../x", "actor": "a"}, "invalid_path", "segments of letters"),
        ({"store": "main", "path": 5, "actor": "a"}, "bad_request", "path: Input should be"),
        ({"store": "main", "path": PATH}, "bad_request", "actor: Field required"),
        ({"stor": "main", "path": PATH, "actor": "a"}, "bad_request", "stor: Extra inputs"),
    ]

    answers = [await _refusal(rpc, params, advice) for params, _, advice in refusals]

    assert answers == [(code, True) for _, code, _ in refusals]
    assert await recorder.db["upload_keys"].count_documents({}) == 0
    assert await recorder.events.count_documents({"aggregate_type": "upload_key"}) == 0


async def _refusal(rpc: RpcClient, params: dict[str, Any], advice: str) -> tuple[str, bool]:
    """The error code, and whether the detail tells the reader what `advice` says."""
    with pytest.raises(RpcError) as refused:
        await rpc.call(RPC_KEYROTATOR_QUEUE, "issue_upload_key", params)
    return refused.value.code, advice in refused.value.detail


async def test_no_log_event_or_message_holds_private_key_material(
    rotators: Rotators,
    rpc: RpcClient,
    repository: Repository,
    recorder: MongoEventRecorder,
    amqp: AmqpBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="m8")
    messages: list[str] = []

    async def tap(event: StoredEvent) -> None:
        messages.append(json.dumps(event.to_json()))

    everything = EventConsumer(amqp, QueueSpec("m8.test.tap", ("#",)), tap, None)
    await everything.start()
    await register(repository, "main")
    await rotators.start(keyrotator_upload_key_lifetime=timedelta(seconds=2))
    kek = read_kek_file(rotators.keys.vault_kek)
    master = read_kek_file(rotators.keys.master)
    secrets = [bytes(kek.private_key), bytes(master.private_key)]
    replies = []
    for outcome in ("stored", "rejected", None):
        signed = await issue(rpc)
        replies.append(json.dumps(signed.to_dict()))
        secrets.append(await _upload_private_key(recorder, kek, signed.statement.key_id))
        if outcome:
            await record_outcome(repository, signed, outcome)
        with pytest.raises(RpcError) as refused:
            await issue(rpc, path="../" + PATH)
        replies.append(str(refused.value))
    secrets += await _signing_seeds(recorder, MasterKey(master))
    await eventually(lambda: _no_keys_left(recorder))
    await eventually(lambda: _at_least(messages, 3 * 2 + 2 * 2 + 3))  # keys, uploads, catalog
    await everything.stop()

    logs = [caplog.text, *(f"{r.getMessage()} {vars(r)}" for r in caplog.records)]
    stored = [repr(doc) async for doc in recorder.events.find({})]
    at_rest = [repr(doc) async for doc in recorder.db["rotator_signing_keys"].find({})]
    assert any("upload key destroyed" in line for line in logs)
    for text in [*logs, *stored, *at_rest, *messages, *replies]:
        for secret in secrets:
            assert not any(form in text for form in _forms(secret))


async def _issue_retrying_on_silence(rpc: RpcClient) -> SignedStatement:
    try:
        return await asyncio.wait_for(issue(rpc), timeout=15)
    except RpcError as exc:
        # A rotator going down mid-request may answer that its database went away.
        if exc.code in ("unavailable", "internal"):
            raise RpcTimeout(exc.code, exc.detail) from None
        raise


async def _upload_private_key(recorder: MongoEventRecorder, kek: Kek, key_id: str) -> bytes:
    doc = await recorder.db["upload_keys"].find_one({"_id": key_id})
    assert doc is not None
    sealed = SealedUploadKey(key_id, doc["kek_id"], base64.b64decode(doc["sealed_private_key"]))
    with unseal_upload_key(sealed, kek) as private:
        return private.reveal()


async def _signing_seeds(recorder: MongoEventRecorder, master: MasterKey) -> list[bytes]:
    docs = recorder.db["rotator_signing_keys"].find({})
    return [
        bytes(master.open(d["_id"], base64.b64decode(d["sealed_seed"])).signing_key)
        async for d in docs
    ]


def _forms(secret: bytes) -> Iterable[str]:
    yield base64.b64encode(secret).decode()
    yield base64.urlsafe_b64encode(secret).decode().rstrip("=")
    yield secret.hex()
    yield repr(secret)[2:-1]


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _not(check: Any) -> bool:
    return not await check


async def _is(value: Any, expected: object) -> bool:
    return bool(await value == expected)


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def _handled(recorder: MongoEventRecorder, event_id: str) -> bool:
    return await recorder.db["inbox"].find_one({"_id": f"m8.keyrotator:{event_id}"}) is not None


async def _more_than_one_key(rpc: RpcClient) -> bool:
    return len(await published(rpc)) > 1


async def _withdrawn(rpc: RpcClient, signing_key_id: str) -> bool:
    return signing_key_id not in await verify_keys(rpc)


async def _no_keys_left(recorder: MongoEventRecorder) -> bool:
    return await recorder.db["upload_keys"].count_documents({}) == 0
