"""Uploads made as m8ctl, the API and the key rotator will make them, straight on the stores.

Shared by the reactor, API and end-to-end tests: stores registered in the catalog; an
upload key issued as the rotator does (a fresh pair, its private half sealed to the KEK
public key in `upload_keys`, UploadKeyIssued, a signed statement); an envelope encrypted
to it as m8ctl does; and the request appended with the key's claim in one transaction,
as the API does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from m8.crypto import (
    Binding,
    EncryptedUpload,
    FingerprintKey,
    Kek,
    ReceiptKeyFile,
    ReceiptSigningKey,
    RotatorSigningKey,
    SignedStatement,
    UploadKeyPair,
    UploadKeyStatement,
    format_utc,
    new_upload_id,
    seal_envelope,
    seal_upload_key,
    sign_statement,
    write_key_file,
    write_receipt_key_file,
)
from m8.devservices.vhosts import VirtualHost
from m8.domain import CATALOG_ID, Secret, StoreCatalog, UploadKey, secret_id
from m8.domain.events import SecretUploadRequested, UploadKeyIssued
from m8.domain.secrets import Upload
from m8.eventsourcing import Metadata, StoredEvent
from m8.eventstore import MongoEventRecorder, Repository
from m8.messaging import Broker
from m8.messaging.topology import declare_queue, reactor_queue
from m8.reactors.bootstrap import configure, start
from m8.reactors.settings import ReactorSettings
from m8.reactors.stores import StoreAdapters
from m8.runtime import Runtime
from tests.support.standins import StandInRelays

METADATA = Metadata(actor="test", correlation_id="corr-uploads")
KEY_LIFETIME = timedelta(minutes=15)


def secret_value() -> bytes:
    """A value no other test uses, so that finding it anywhere is a leak of this one."""
    return f"s3cr3t-{uuid.uuid4().hex}".encode()


async def declare_reactor_queues(broker: Broker) -> None:
    """The reactors' queues, as a running system has them before anything is published."""
    channel = await broker.channel()
    for store_type in ("vault", "aws"):
        await declare_queue(channel, reactor_queue(store_type))


@dataclass(frozen=True)
class ReactorKeys:
    """A reactor group's KEK, the fingerprint key and a receipt key, in 0600 key files."""

    kek: Kek
    fingerprint_key: FingerprintKey
    kek_file: Path
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
            write_key_file(directory / f"{kek_id}.json", kek),
            write_key_file(directory / "fingerprint-key.json", fp_key),
            receipt_key,
            write_receipt_key_file(directory / "receipt-key.json", ReceiptKeyFile(receipt_key)),
        )


@dataclass(frozen=True)
class IssuedKey:
    """An upload key as the rotator hands it out (the private pair only tests keep)."""

    pair: UploadKeyPair
    signed: SignedStatement
    store: str
    store_type: str
    path: str

    @property
    def key_id(self) -> str:
        return self.pair.key_id


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
    """Does what the rotator, m8ctl and the API do for an upload, on the test's event store."""

    recorder: MongoEventRecorder
    kek: Kek
    signing_key: RotatorSigningKey = field(
        default_factory=lambda: RotatorSigningKey.generate("rotator-1")
    )

    @property
    def repository(self) -> Repository:
        return Repository(self.recorder)

    async def register_store(self, name: str, store_type: str, config: dict[str, Any]) -> None:
        """An admin adds an (active) store."""
        await self.repository.update(
            StoreCatalog, CATALOG_ID, lambda c: c.register(name, store_type, config), METADATA
        )

    async def deactivate_store(self, name: str) -> None:
        """An admin deactivates a store."""
        await self.repository.update(
            StoreCatalog, CATALOG_ID, lambda c: c.deactivate(name), METADATA
        )

    async def issue_key(
        self, store: str, path: str, *, lifetime: timedelta = KEY_LIFETIME
    ) -> IssuedKey:
        """The rotator issues a key: sealed private half in `upload_keys`, UploadKeyIssued."""
        catalog = await self.repository.load(StoreCatalog, CATALOG_ID)
        store_type = catalog.get(store).store_type
        pair = UploadKeyPair.generate()
        sealed = seal_upload_key(pair, self.kek.public)
        now = datetime.now(UTC)
        statement = UploadKeyStatement(
            key_id=pair.key_id,
            public_key=pair.public_key_bytes,
            store_id=store,
            path=path,
            expires_at=now + lifetime,
            kek_id=sealed.kek_id,
        )
        key = UploadKey(pair.key_id)
        key.issue(
            UploadKeyIssued(
                key_id=pair.key_id,
                store=store,
                store_type=store_type,
                path=path,
                kek_id=sealed.kek_id,
                signing_key_id=self.signing_key.signing_key_id,
                expires_at=format_utc(statement.expires_at),
            )
        )
        async with self.recorder.transaction() as session:
            await self.recorder.db["upload_keys"].insert_one(
                {
                    "_id": pair.key_id,
                    "store": store,
                    "store_type": store_type,
                    "path": path,
                    "kek_id": sealed.kek_id,
                    "sealed_private_key": sealed.to_dict()["sealed_private_key"],
                    "expires_at": statement.expires_at,
                    "created_at": now,
                },
                session=session,
            )
            await self.repository.save(key, METADATA, session=session)
        return IssuedKey(pair, sign_statement(statement, self.signing_key), store, store_type, path)

    def encrypt(
        self, key: IssuedKey, value: bytes, *, upload_id: str | None = None, **binding: str
    ) -> tuple[str, EncryptedUpload]:
        """m8ctl encrypts `value` for `key`; `binding` overrides a field (store_id, path, ...)."""
        upload_id = upload_id or new_upload_id()
        bound = replace(Binding(upload_id, key.key_id, key.store, key.path), **binding)
        return upload_id, seal_envelope(value, bound, key.pair.public_key_bytes)

    async def submit(
        self,
        key: IssuedKey,
        upload_id: str,
        encrypted: EncryptedUpload,
        *,
        claim: bool = True,
        claimed_at: datetime | None = None,
    ) -> Sent:
        """The API appends the request and the key's claim in one transaction."""
        wire = encrypted.to_dict()
        request = SecretUploadRequested(
            upload_id=upload_id,
            store=key.store,
            store_type=key.store_type,
            path=key.path,
            key_id=key.key_id,
            client_public_key=wire["client_public_key"],
            nonce=wire["nonce"],
            ciphertext=wire["ciphertext"],
            ciphertext_sha256=hashlib.sha256(encrypted.ciphertext).hexdigest(),
            requested_by="alice",
        )
        upload_key = await self.repository.load(UploadKey, key.key_id)
        if claim:
            upload_key.claim(upload_id, key.store, key.path, now=claimed_at)
        secret = await self.repository.load(Secret, secret_id(key.store, key.path))
        secret.request_upload(request)
        async with self.recorder.transaction() as session:
            await self.repository.save(upload_key, METADATA, session=session)
            [event] = await self.repository.save(secret, METADATA, session=session)
        return Sent(request, event)

    async def upload(self, store: str, path: str, value: bytes) -> Sent:
        """A whole, honest upload: key, envelope, request."""
        key = await self.issue_key(store, path)
        upload_id, encrypted = self.encrypt(key, value)
        return await self.submit(key, upload_id, encrypted)

    async def state(self, sent: Sent) -> Upload:
        """The upload as its Secret aggregate records it now."""
        secret = await self.repository.load(Secret, sent.secret_id)
        return secret.upload(sent.upload_id)

    async def settled(
        self, sent: Sent, timeout: float = 60, statuses: frozenset[str] = frozenset()
    ) -> Upload:
        """Waits until the upload is stored, rejected or failed (or one of `statuses`)."""
        wanted = statuses or frozenset({"stored", "rejected", "failed"})
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
        await start(runtime, config)

    async def stop(self) -> None:
        """Stops every reactor this process runs."""
        for runtime, stores in self.running:
            await runtime.close()
            await stores.close()
        self.running.clear()
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
