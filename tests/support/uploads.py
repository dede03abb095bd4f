"""Uploads made by m8ctl's, the API's and the key rotator's own code, on the test's servers.

Shared by the reactor, API and end-to-end tests: stores registered and upload requests
recorded by the API's commands (m8.api.handlers), upload keys issued and destroyed by the
key rotator (m8.keyrotator.service, wired as its bootstrap wires it, with its real signing
keys under a master key of the test's), and envelopes encrypted as m8ctl does. The API and
the rotator read one clock that tests move (`Clock`) where time matters; the reactors keep
the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from m8 import stores
from m8.api.handlers import Commands, UploadCommand
from m8.crypto import (
    Binding,
    EncryptedUpload,
    FingerprintKey,
    Kek,
    ReceiptKeyFile,
    ReceiptSigningKey,
    SignedStatement,
    new_upload_id,
    seal_envelope,
    write_key_file,
    write_receipt_key_file,
)
from m8.devservices.vhosts import VirtualHost
from m8.domain import CATALOG_ID, Secret, StoreCatalog, secret_id
from m8.domain.events import SecretUploadRequested
from m8.domain.secrets import Upload
from m8.eventsourcing import Metadata, Repository, StoredEvent
from m8.eventstore import MongoEventRecorder
from m8.keyrotator import KeyRotatorSettings, RotatorKeys
from m8.keyrotator.bootstrap import create_upload_key_indexes, signing_keys
from m8.keyrotator.service import KeyRotator
from m8.keyrotator.upload_keys import UploadKeyStore
from m8.messaging import Broker
from m8.messaging.topology import declare_queue, reactor_queue
from m8.reactors import path_leases
from m8.reactors.bootstrap import configure, start
from m8.reactors.reactor import Reactor
from m8.reactors.settings import ReactorSettings
from m8.reactors.stores import StoreAdapters
from m8.runtime import Runtime
from tests.support.standins import StandInRelays

METADATA = Metadata(actor="test", correlation_id="corr-uploads")


def secret_value() -> bytes:
    """A value no other test uses, so that finding it anywhere is a leak of this one."""
    return f"s3cr3t-{uuid.uuid4().hex}".encode()


async def declare_reactor_queues(broker: Broker) -> None:
    """The reactors' queues, as a running system has them before anything is published."""
    channel = await broker.channel()
    for store_type in stores.names():
        await declare_queue(channel, reactor_queue(store_type))


@dataclass(frozen=True)
class ReactorKeys:
    """A reactor group's KEK (both halves, as `m8 keys generate-kek` writes them), the
    fingerprint key and a receipt key, in key files."""

    kek: Kek
    fingerprint_key: FingerprintKey
    kek_file: Path
    kek_public_file: Path
    fingerprint_key_file: Path
    receipt_key: ReceiptSigningKey
    receipt_key_file: Path

    @classmethod
    def create(cls, directory: Path, kek_id: str = "kek-1") -> ReactorKeys:
        """Fresh keys in `directory`."""
        kek, fp_key = Kek.generate(kek_id), FingerprintKey.generate()
        receipt_key = ReceiptSigningKey.generate("receipt-1")
        return cls(
            kek,
            fp_key,
            write_key_file(directory / f"{kek_id}.kek.json", kek),
            write_key_file(directory / f"{kek_id}.pub.json", kek.public),
            write_key_file(directory / "fingerprint-key.json", fp_key),
            receipt_key,
            write_receipt_key_file(directory / "receipt-key.json", ReceiptKeyFile(receipt_key)),
        )


class Clock:
    """The real time moved by `offset`: the clock of the rotator and the API tests drive."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    @contextlib.contextmanager
    def moved(self, by: timedelta) -> Iterator[None]:
        """Reads `by` away from the real time inside the block."""
        self.offset = by
        try:
            yield
        finally:
            self.offset = timedelta(0)


@dataclass(frozen=True)
class IssuedKey:
    """An upload key's signed statement, as the rotator hands it out."""

    signed: SignedStatement

    @property
    def key_id(self) -> str:
        return self.signed.statement.key_id

    @property
    def store(self) -> str:
        return self.signed.statement.store_id

    @property
    def path(self) -> str:
        return self.signed.statement.path


@dataclass(frozen=True)
class Sent:
    """An upload request as the API appended it."""

    request: SecretUploadRequested
    event: StoredEvent

    @property
    def upload_id(self) -> str:
        return self.request.upload_id

    @property
    def secret_id(self) -> str:
        return secret_id(self.request.store, self.request.path)


@dataclass
class Uploads:
    """The rotator's and the API's handlers on the test's event store, and m8ctl's envelopes."""

    recorder: MongoEventRecorder
    rotator_settings: KeyRotatorSettings
    rotator: KeyRotator
    commands: Commands
    clock: Clock

    @classmethod
    async def create(
        cls, recorder: MongoEventRecorder, keys: ReactorKeys, directory: Path
    ) -> Uploads:
        """A rotator that seals every store type's keys to `keys`' KEK, with a new master
        key in `directory` (its settings are `rotator_settings`), and the API's commands."""
        master = write_key_file(directory / "rotator-master.json", Kek.generate("master-1"))
        settings = KeyRotatorSettings(
            keyrotator_kek_files={t: [keys.kek_public_file] for t in stores.names()},
            keyrotator_master_key_file=master,
        )
        # As m8.keyrotator.bootstrap.start wires it, without the RPC server, the outcome
        # consumer and the loops: tests call the handlers when the story needs them.
        rotator_keys = RotatorKeys.load(settings)
        await create_upload_key_indexes(recorder.db)
        signing = signing_keys(recorder.db, settings, rotator_keys.masters)
        await signing.create_indexes()
        clock, repository = Clock(), Repository(recorder)
        rotator = KeyRotator(
            repository,
            UploadKeyStore(recorder),
            signing,
            rotator_keys.keks,
            settings.keyrotator_upload_key_lifetime,
            now=clock,
        )
        return cls(recorder, settings, rotator, Commands(repository, now=clock), clock)

    @property
    def repository(self) -> Repository:
        return self.commands.repository

    async def register_store(self, name: str, store_type: str, config: dict[str, Any]) -> None:
        """An admin adds an (active) store."""
        await self.commands.change_catalog(lambda c: c.register(name, store_type, config), METADATA)

    async def deactivate_store(self, name: str) -> None:
        """An admin deactivates a store."""
        await self.commands.change_catalog(lambda c: c.deactivate(name), METADATA)

    async def issue_key(self, store: str, path: str) -> IssuedKey:
        """The rotator issues a key for `path` in `store`."""
        return IssuedKey(await self.rotator.issue(store, path, METADATA))

    async def expire_keys(self) -> int:
        """The rotator's sweep once every key issued until now has expired; how many it
        destroyed."""
        with self.clock.moved(self.rotator.lifetime + timedelta(seconds=1)):
            return await self.rotator.sweep()

    async def expire_path_leases(self) -> None:
        """Every path's lease runs out, as it does a while after its reactor died."""
        await self.recorder.db[path_leases.COLLECTION].update_many(
            {}, {"$set": {"until": path_leases.GIVEN_BACK}}
        )

    def encrypt(
        self, key: IssuedKey, value: bytes, *, upload_id: str | None = None, **binding: str
    ) -> tuple[str, EncryptedUpload]:
        """m8ctl encrypts `value` for `key`; `binding` overrides a field (store_id, path, ...)."""
        upload_id = upload_id or new_upload_id()
        bound = replace(Binding(upload_id, key.key_id, key.store, key.path), **binding)
        return upload_id, seal_envelope(value, bound, key.signed.statement.public_key)

    def command(self, key: IssuedKey, upload_id: str, encrypted: EncryptedUpload) -> UploadCommand:
        """What the API makes of m8ctl's POST /v1/secrets."""
        wire = encrypted.to_dict()
        return UploadCommand(
            upload_id=upload_id,
            key_id=key.key_id,
            client_public_key=wire["client_public_key"],
            nonce=wire["nonce"],
            ciphertext=wire["ciphertext"],
            store=key.store,
            path=key.path,
            requested_by="alice",
        )

    async def submit(self, key: IssuedKey, upload_id: str, encrypted: EncryptedUpload) -> Sent:
        """The API claims the key and records the request."""
        return await self.request(self.command(key, upload_id, encrypted))

    async def request(self, command: UploadCommand) -> Sent:
        """The API's command for `command`, and the request it recorded."""
        assert command.store is not None, "name the store: the request is found under it"
        await self.commands.request_upload(command, METADATA)
        return await self.sent(command.store, command.path, command.upload_id)

    async def append_unclaimed(
        self, key: IssuedKey, upload_id: str, encrypted: EncryptedUpload
    ) -> Sent:
        """A request the API would refuse, in the event store all the same: one under a key
        it does not claim (a writer of the event store appends it to the Secret)."""
        catalog = await self.repository.load(StoreCatalog, CATALOG_ID)
        command = self.command(key, upload_id, encrypted)
        request = SecretUploadRequested(
            upload_id=upload_id,
            store=key.store,
            store_type=catalog.get(key.store).store_type,
            path=key.path,
            key_id=key.key_id,
            client_public_key=command.client_public_key,
            nonce=command.nonce,
            ciphertext=command.ciphertext,
            ciphertext_sha256=command.ciphertext_sha256,
            requested_by=command.requested_by,
        )
        await self.repository.update(
            Secret, secret_id(key.store, key.path), lambda s: s.request_upload(request), METADATA
        )
        return await self.sent(key.store, key.path, upload_id)

    async def sent(self, store: str, path: str, upload_id: str) -> Sent:
        """The request of upload `upload_id` as recorded."""
        for event in await self.recorder.load(Secret.aggregate_type, secret_id(store, path)):
            request = event.decode()
            if isinstance(request, SecretUploadRequested) and request.upload_id == upload_id:
                return Sent(request, event)
        raise AssertionError(f"no request of upload {upload_id} was recorded")

    async def upload(self, store: str, path: str, value: bytes) -> Sent:
        """A whole, honest upload: key, envelope, request."""
        key = await self.issue_key(store, path)
        upload_id, encrypted = self.encrypt(key, value)
        return await self.submit(key, upload_id, encrypted)

    async def upload_expired_after_its_claim(self, store: str, path: str, value: bytes) -> Sent:
        """An upload whose key was claimed in time and has expired since (issued a lifetime
        and 5 minutes ago, claimed 10 minutes ago)."""
        with self.clock.moved(-(self.rotator.lifetime + timedelta(minutes=5))):
            key = await self.issue_key(store, path)
        upload_id, encrypted = self.encrypt(key, value)
        with self.clock.moved(-timedelta(minutes=10)):
            return await self.submit(key, upload_id, encrypted)

    async def state(self, sent: Sent) -> Upload:
        """The upload as its Secret aggregate records it now."""
        secret = await self.repository.load(Secret, sent.secret_id)
        return secret.upload(sent.upload_id)

    async def settled(
        self, sent: Sent, timeout: float = 60, statuses: frozenset[str] = frozenset()
    ) -> Upload:
        """Waits until the upload is stored, rejected, superseded or failed (or one of
        `statuses`)."""
        wanted = statuses or frozenset({"stored", "rejected", "superseded", "failed"})
        async with asyncio.timeout(timeout):
            while (upload := await self.state(sent)).status not in wanted:
                await asyncio.sleep(0.1)
        return upload

    async def outcomes(self, sent: Sent) -> list[StoredEvent]:
        """The outcome events recorded for the upload, oldest first."""
        events = await self.recorder.load(Secret.aggregate_type, sent.secret_id)
        return [
            e
            for e in events
            if e.event_type != "SecretUploadRequested" and e.data["upload_id"] == sent.upload_id
        ]


@dataclass
class Reactors:
    """Reactors a test runs in its own process (on connections of their own), or spawns."""

    uploads: Uploads
    keys: ReactorKeys
    settings: ReactorSettings
    stand_ins: StandInRelays
    broker: VirtualHost
    running: list[tuple[Runtime, StoreAdapters]] = field(default_factory=list)
    # Every reactor started, stopped ones too: their metrics still count what they did.
    started: list[Reactor] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        uploads: Uploads,
        keys: ReactorKeys,
        broker: VirtualHost,
        mongodb_uri: str,
        database: str,
    ) -> Reactors:
        """Reactors on the test's virtual host and database, with `keys`; each reactor on its
        type's own broker user, as deployed."""
        settings = ReactorSettings(
            amqp_url=broker.url,
            mongodb_uri=mongodb_uri,
            mongodb_database=database,
            reactor_kek_files=[keys.kek_file],
            reactor_fingerprint_key_file=keys.fingerprint_key_file,
            reactor_receipt_key_file=keys.receipt_key_file,
            reactor_concurrency=4,
        )
        # The test appends what the API and the rotator would: publish it as they would.
        stand_ins = StandInRelays(uploads.recorder, broker.url, ("api", "keyrotator"))
        stand_ins.start()
        return cls(uploads, keys, settings, stand_ins, broker)

    def use_credentials(self, credentials: dict[str, dict[str, Any]]) -> None:
        """Credentials entries by store name (see m8.reactors.credentials: each pins its
        store's whole config), for reactors started from now on."""
        self.settings = self.settings.model_copy(
            update={"reactor_credentials": SecretStr(json.dumps(credentials))}
        )

    async def start(self, store_type: str, **overrides: Any) -> None:
        """A reactor of `store_type` in this process; `overrides` change its settings."""
        own_user = {"amqp_url": self.broker.service_url(f"reactor-{store_type}")}
        settings = self.settings.model_copy(update={**own_user, **overrides})
        config = configure(settings, store_type)
        runtime = await Runtime.start(f"reactor-{store_type}", settings)
        self.running.append((runtime, config.stores))
        self.started.append(await start(runtime, config))

    async def stop_reactors(self) -> None:
        """Stops every reactor this process runs (they finish what they have in hand)."""
        for runtime, adapters in self.running:
            await runtime.close()
            await adapters.close()
        self.running.clear()

    async def stop(self) -> None:
        """Stops every reactor this process runs, and the stand-in relays."""
        await self.stop_reactors()
        await self.stand_ins.stop()

    def environment(self, store_type: str) -> dict[str, str]:
        """The settings as the environment of a reactor process (`m8 reactor <type>`)."""
        credentials = self.settings.reactor_credentials
        return {
            **os.environ,
            "M8_AMQP_URL": self.broker.service_url(f"reactor-{store_type}"),
            "M8_MONGODB_URI": self.settings.mongodb_uri or "",
            "M8_MONGODB_DATABASE": self.settings.mongodb_database,
            "M8_REACTOR_KEK_FILES": str(self.keys.kek_file),
            "M8_REACTOR_FINGERPRINT_KEY_FILE": str(self.keys.fingerprint_key_file),
            "M8_REACTOR_RECEIPT_KEY_FILE": str(self.keys.receipt_key_file),
            "M8_REACTOR_CREDENTIALS": credentials.get_secret_value() if credentials else "{}",
            "M8_LOG_FORMAT": "console",
        }


def tamper(encrypted: EncryptedUpload) -> EncryptedUpload:
    """The same upload with one ciphertext bit flipped."""
    changed = bytearray(encrypted.ciphertext)
    changed[len(changed) // 2] ^= 0x01
    return replace(encrypted, ciphertext=bytes(changed))
