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
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import VerifyKey
from pymongo.errors import DuplicateKeyError
from typer.testing import CliRunner

from m8.crypto import (
    Kek,
    RotatorSigningKey,
    SealedUploadKey,
    SignedStatement,
    UnknownSigningKey,
    decode_verify_key,
    encode_verify_key,
    endorsement_valid,
    key_self_signature_valid,
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
from m8.eventsourcing import Metadata, Repository, StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.keyrotator import KeyRotatorSettings, RotatorKeys, start
from m8.keyrotator.cli import keys_app
from m8.keyrotator.master_key import MasterKey
from m8.keyrotator.service import KeyRotator
from m8.messaging import Broker as AmqpBroker
from m8.messaging import EventConsumer, QueueSpec, RpcClient, RpcError, RpcTimeout
from m8.messaging.topology import RPC_KEYROTATOR_QUEUE
from m8.runtime import ConfigurationError, Runtime
from tests.servers import Broker
from tests.support.events import eventually
from tests.support.standins import relay_events_of

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
            "amqp_url": self.broker.service_url("keyrotator"),  # its own user, as deployed
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
        # The tests record what the API and the reactors would: publish it as they would.
        relay_events_of(runtime, self.broker.url, "api", "reactor-vault", "reactor-aws")
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
    rotators: Rotators,
    rpc: RpcClient,
    repository: Repository,
    recorder: MongoEventRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="m8.keyrotator.service")
    await register(repository, "main")
    await rotators.start()
    rejected, failed = await issue(rpc), await issue(rpc)

    failure = await record_outcome(repository, failed, "failed")
    await record_outcome(repository, rejected, "rejected")

    await eventually(
        lambda: _is(destroyed_reason(repository, rejected.statement.key_id), "rejected")
    )
    failed_upload = str(failure.data["upload_id"])

    async def kept() -> bool:
        return any(getattr(r, "upload_id", None) == failed_upload for r in caplog.records)

    await eventually(kept)
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

    # The old key vouches for its successor, and for the successor's whole life.
    [successor] = [k for k in keys if k["signing_key_id"] == newer.signing_key_id]
    assert successor["endorsed_by"] == old.signing_key_id
    assert _endorsement_holds(successor, decode_verify_key(entry["verify_key"]))

    await eventually(lambda: _withdrawn(rpc, old.signing_key_id), timeout=30)
    assert datetime.now(UTC) >= old.statement.expires_at
    # ...and the answer says it is gone, so clients drop their pin of it.
    await eventually(lambda: _listed_withdrawn(rpc, old.signing_key_id))
    with pytest.raises(UnknownSigningKey):
        verify_statement(
            old, await verify_keys(rpc), now=old.statement.expires_at - timedelta(seconds=1)
        )


async def test_a_published_key_has_a_not_after_fixed_at_creation_and_signed_by_itself(
    rotators: Rotators, rpc: RpcClient, recorder: MongoEventRecorder
) -> None:
    await rotators.start(
        keyrotator_upload_key_lifetime=timedelta(minutes=2),
        keyrotator_signing_key_period=timedelta(hours=1),
        keyrotator_signing_key_overlap=timedelta(minutes=1),
    )

    [entry] = await published(rpc)

    key_id, not_after = entry["signing_key_id"], _parse_time(entry["not_after"])
    assert not_after == _parse_time(entry["created_at"]) + timedelta(hours=1, minutes=3)
    verify_key, signature = decode_verify_key(entry["verify_key"]), _b64(entry["self_signature"])
    assert key_self_signature_valid(verify_key, key_id, not_after, signature)
    later = not_after + timedelta(seconds=1)
    assert not key_self_signature_valid(verify_key, key_id, later, signature)
    stored = await recorder.db["rotator_signing_keys"].find_one({"_id": key_id})
    assert stored is not None
    assert (stored["not_after"], stored["self_signature"]) == (not_after, entry["self_signature"])


async def test_an_endorsement_covers_the_successors_not_after(
    rotators: Rotators, rpc: RpcClient
) -> None:
    await rotators.start(keyrotator_signing_key_period=timedelta(seconds=1))

    await eventually(lambda: _more_than_one_key(rpc))

    first, second, *_ = await published(rpc)
    assert second["endorsed_by"] == first["signing_key_id"]
    endorser = decode_verify_key(first["verify_key"])
    assert _endorsement_holds(second, endorser)
    longer = _parse_time(second["not_after"]) + timedelta(days=365)
    assert not _endorsement_holds(second, endorser, not_after=longer)


async def test_a_key_endorses_one_successor_and_the_database_refuses_a_second(
    rotators: Rotators, rpc: RpcClient, recorder: MongoEventRecorder
) -> None:
    runtime, _ = await rotators.start(keyrotator_signing_key_period=timedelta(seconds=1))
    await eventually(lambda: _more_than_one_key(rpc))
    first, second, *_ = await published(rpc)
    await rotators.stop(runtime)
    keys = recorder.db["rotator_signing_keys"]
    rival = await keys.find_one({"_id": second["signing_key_id"]})
    assert rival is not None

    # Whoever held the first key's seed endorses a key of their own beside the real successor.
    rival |= {"_id": "rsk-rival", "seq": 10_000}
    with pytest.raises(DuplicateKeyError):
        await keys.insert_one(rival)
    assert [d["_id"] async for d in keys.find({"endorsed_by": first["signing_key_id"]})] == [
        second["signing_key_id"]
    ]


async def test_a_withdrawn_key_is_listed_as_withdrawn(rotators: Rotators, rpc: RpcClient) -> None:
    await rotators.start(
        keyrotator_upload_key_lifetime=timedelta(seconds=1),
        keyrotator_signing_key_period=timedelta(seconds=1),
        keyrotator_signing_key_overlap=timedelta(seconds=0.2),
    )
    [first] = await published(rpc)

    await eventually(lambda: _listed_withdrawn(rpc, first["signing_key_id"]))

    reply = await rpc.call(RPC_KEYROTATOR_QUEUE, "verify_keys", {})
    [withdrawn] = [w for w in reply["withdrawn"] if w["signing_key_id"] == first["signing_key_id"]]
    assert _parse_time(withdrawn["withdrawn_at"]) >= _parse_time(first["created_at"])
    live = {k["signing_key_id"] for k in reply["keys"]}
    assert not live & {w["signing_key_id"] for w in reply["withdrawn"]}


async def test_a_statement_never_outlives_its_signer_even_after_the_lifetime_grew(
    rotators: Rotators, rpc: RpcClient, repository: Repository
) -> None:
    await register(repository, "main")
    period = timedelta(seconds=30)  # the key lives 32s; the test takes a few
    short, _ = await rotators.start(
        keyrotator_upload_key_lifetime=timedelta(seconds=2),
        keyrotator_signing_key_period=period,
        keyrotator_signing_key_overlap=timedelta(0),
    )
    before = await issue(rpc)
    await rotators.stop(short)

    # Restarted with upload keys that live longer than the current key has left.
    await rotators.start(
        keyrotator_upload_key_lifetime=timedelta(minutes=10),
        keyrotator_signing_key_period=period,
        keyrotator_signing_key_overlap=timedelta(0),
    )
    after = await issue(rpc)

    not_after = {k["signing_key_id"]: _parse_time(k["not_after"]) for k in await published(rpc)}
    for signed in (before, after):
        assert signed.statement.expires_at <= not_after[signed.signing_key_id]
    assert after.signing_key_id != before.signing_key_id  # rotated rather than sign too long


async def test_the_master_key_rotates_while_rotators_run_and_the_signing_key_stays(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    old_file = rotators.keys.master
    new_file = old_file.parent / "master-new.json"
    made = CliRunner().invoke(
        keys_app, ["generate-master-key", "--out", str(new_file), "--key-id", "master-new"]
    )
    assert made.exit_code == 0, made.output
    only_old, _ = await rotators.start()
    signer = (await issue(rpc)).signing_key_id
    await rotators.stop(only_old)
    # Before the seeds are moved, a rotator with only the new key says what is missing.
    with pytest.raises(ConfigurationError, match="M8_KEYROTATOR_MASTER_KEY_FILES"):
        await rotators.start(
            keyrotator_master_key_file=None, keyrotator_master_key_files=[new_file]
        )

    both = {"keyrotator_master_key_file": None, "keyrotator_master_key_files": [new_file, old_file]}
    await rotators.start(**both)  # step 2: every rotator holds both keys
    first = await _rotate_master_key(rotators, [new_file, old_file])  # step 3, while it runs
    assert (await issue(rpc)).signing_key_id == signer
    again = await _rotate_master_key(rotators, [new_file, old_file])
    for runtime in list(rotators.running):
        await rotators.stop(runtime)
    # Step 4: the old master key is gone; the same signing key goes on signing.
    await rotators.start(keyrotator_master_key_file=None, keyrotator_master_key_files=[new_file])
    signed = await issue(rpc)

    assert first.returncode == 0, first.stderr
    assert f"Re-sealed under it: 1 ({signer})" in first.stdout
    assert "Re-sealed under it: 0" in again.stdout
    assert "Already under it: 1" in again.stdout
    assert signed.signing_key_id == signer
    verify_statement(signed, await verify_keys(rpc))
    docs = recorder.db["rotator_signing_keys"].find({"sealed_seed": {"$exists": True}})
    assert {d["master_key_id"] async for d in docs} == {"master-new"}
    old, new = read_kek_file(old_file), read_kek_file(new_file)
    for secret in (bytes(old.private_key), bytes(new.private_key)):
        for output in (first.stdout, first.stderr, again.stdout, again.stderr):
            assert not any(form in output for form in _forms(secret))


async def test_keys_written_before_not_after_existed_get_one_and_a_self_signature(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    master = MasterKey(read_kek_file(rotators.keys.master))
    older, newer = RotatorSigningKey.generate("rsk-1-aa"), RotatorSigningKey.generate("rsk-2-bb")
    now = datetime.now(UTC).replace(microsecond=0)
    keys = recorder.db["rotator_signing_keys"]
    for seq, key, created_at in ((1, older, now - timedelta(minutes=2)), (2, newer, now)):
        doc: dict[str, Any] = {  # what the code before issue 10 wrote
            "_id": key.signing_key_id,
            "seq": seq,
            "created_at": created_at,
            "verify_key": encode_verify_key(key.verify_key),
            "master_key_id": master.key_id,
            "sealed_seed": base64.b64encode(master.seal(key)).decode(),
        }
        if seq == 2:
            doc |= {"endorsed_by": older.signing_key_id, "endorsement": "djEtZW5kb3JzZW1lbnQ="}
        await keys.insert_one(doc)

    await rotators.start(
        keyrotator_upload_key_lifetime=timedelta(minutes=2),
        keyrotator_signing_key_period=timedelta(hours=1),
        keyrotator_signing_key_overlap=timedelta(minutes=1),
    )

    entries = {k["signing_key_id"]: k for k in await published(rpc)}
    assert set(entries) == {"rsk-1-aa", "rsk-2-bb"}
    for entry in entries.values():
        not_after = _parse_time(entry["not_after"])
        assert not_after == _parse_time(entry["created_at"]) + timedelta(hours=1, minutes=3)
        verify_key = decode_verify_key(entry["verify_key"])
        assert key_self_signature_valid(
            verify_key, entry["signing_key_id"], not_after, _b64(entry["self_signature"])
        )
        stored = await keys.find_one({"_id": entry["signing_key_id"]})
        assert stored is not None
        assert stored["not_after"] == not_after  # persisted
    # Its endorser's seed is still here: the successor is endorsed again, with its not_after.
    assert _endorsement_holds(entries["rsk-2-bb"], older.verify_key)
    assert (await issue(rpc)).signing_key_id == "rsk-2-bb"


async def test_a_database_writer_cannot_have_a_signing_key_re_signed_with_a_longer_life(
    rotators: Rotators, rpc: RpcClient, repository: Repository, recorder: MongoEventRecorder
) -> None:
    await register(repository, "main")
    lives = {
        "keyrotator_upload_key_lifetime": timedelta(minutes=2),
        "keyrotator_signing_key_overlap": timedelta(minutes=1),
    }
    runtime, _ = await rotators.start(**lives, keyrotator_signing_key_period=timedelta(seconds=1))
    await eventually(lambda: _more_than_one_key(rpc))
    await rotators.stop(runtime)
    keys = recorder.db["rotator_signing_keys"]
    target = await keys.find_one({}, sort=[("seq", -1)])
    assert target is not None
    endorser = await keys.find_one({"_id": target["endorsed_by"]})
    assert endorser is not None

    # It passes the key off as one from before not_after existed, made ten years from now.
    await keys.update_one(
        {"_id": target["_id"]},
        {
            "$unset": {"not_after": "", "self_signature": ""},
            "$set": {"created_at": datetime.now(UTC) + timedelta(days=3650)},
        },
    )
    started = datetime.now(UTC)
    await rotators.start(**lives, keyrotator_signing_key_period=timedelta(hours=1))

    # No longer a life than a key made now, self-signed and endorsed as that...
    bound = started + timedelta(hours=1, minutes=3)
    entries = {k["signing_key_id"]: k for k in await published(rpc)}
    entry = entries[target["_id"]]
    not_after = _parse_time(entry["not_after"])
    assert not_after <= datetime.now(UTC) + timedelta(hours=1, minutes=3)
    assert not_after >= bound - timedelta(seconds=1)
    assert key_self_signature_valid(
        decode_verify_key(entry["verify_key"]),
        target["_id"],
        not_after,
        _b64(entry["self_signature"]),
    )
    assert _endorsement_holds(entry, decode_verify_key(endorser["verify_key"]))
    # ...and a key "made in the future" is due at once: a fresh key signs, and none lives
    # longer than one made now.
    signed = await issue(rpc)
    assert signed.signing_key_id != target["_id"]
    for listed in await published(rpc):
        assert _parse_time(listed["not_after"]) <= datetime.now(UTC) + timedelta(hours=1, minutes=3)


@pytest.mark.parametrize("removed", ["not_after", "self_signature"])
async def test_a_signing_key_with_one_of_its_fixed_life_fields_removed_is_refused(
    rotators: Rotators, rpc: RpcClient, recorder: MongoEventRecorder, removed: str
) -> None:
    runtime, _ = await rotators.start()
    [entry] = await published(rpc)
    await rotators.stop(runtime)
    keys = recorder.db["rotator_signing_keys"]
    await keys.update_one({"_id": entry["signing_key_id"]}, {"$unset": {removed: ""}})

    with pytest.raises(ConfigurationError, match="was altered"):
        await rotators.start()

    stored = await keys.find_one({"_id": entry["signing_key_id"]})
    assert stored is not None
    assert removed not in stored  # not "upgraded" to a life of the rotator's choosing


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
    # The expired key's destruction (the others go to no bus), uploads, catalog.
    await eventually(lambda: _at_least(messages, 1 + 2 * 2 + 3))
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


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _endorsement_holds(
    entry: dict[str, Any], endorser: VerifyKey, not_after: datetime | None = None
) -> bool:
    """Whether `entry`'s endorsement is `endorser`'s over it and its not_after (or this one)."""
    return endorsement_valid(
        endorser,
        entry["signing_key_id"],
        decode_verify_key(entry["verify_key"]),
        not_after or _parse_time(entry["not_after"]),
        _b64(entry["endorsement"]),
    )


async def _rotate_master_key(
    rotators: Rotators, files: list[Path]
) -> subprocess.CompletedProcess[str]:
    """`m8 keys rotate-master-key`, run by an operator with the rotators' settings."""
    env = {
        **os.environ,
        "M8_MONGODB_URI": rotators.mongodb_uri,
        "M8_MONGODB_DATABASE": rotators.database,
        "M8_KEYROTATOR_MASTER_KEY_FILES": ",".join(str(f) for f in files),
    }
    for name in ("M8_KEYROTATOR_MASTER_KEY_FILE", "M8_KEYROTATOR_MASTER_KEY"):
        env.pop(name, None)
    m8 = str(Path(sys.executable).parent / "m8")
    return await asyncio.to_thread(
        subprocess.run,
        [m8, "keys", "rotate-master-key"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _not(check: Any) -> bool:
    return not await check


async def _is(value: Any, expected: object) -> bool:
    return bool(await value == expected)


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def _more_than_one_key(rpc: RpcClient) -> bool:
    return len(await published(rpc)) > 1


async def _withdrawn(rpc: RpcClient, signing_key_id: str) -> bool:
    return signing_key_id not in await verify_keys(rpc)


async def _listed_withdrawn(rpc: RpcClient, signing_key_id: str) -> bool:
    reply = await rpc.call(RPC_KEYROTATOR_QUEUE, "verify_keys", {})
    return signing_key_id in [w["signing_key_id"] for w in reply["withdrawn"]]


async def _no_keys_left(recorder: MongoEventRecorder) -> bool:
    return await recorder.db["upload_keys"].count_documents({}) == 0
