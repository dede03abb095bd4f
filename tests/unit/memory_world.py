"""m8's three handlers (the key rotator, the API's commands, a reactor) on one in-memory
recorder, with one clock: the production code, with fakes only for what lies outside
m8 (the rotator's signing key store and the upstream store)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import ClassVar, cast

from m8.api.handlers import Commands, UploadCommand
from m8.crypto import (
    Binding,
    EncryptedUpload,
    FingerprintKey,
    Kek,
    KekRing,
    ReceiptSigningKey,
    RotatorSigningKey,
    SealedUploadKey,
    SignedStatement,
    new_upload_id,
    seal_envelope,
)
from m8.domain import CATALOG_ID, Secret, StoreCatalog, Upload, secret_id
from m8.eventsourcing import Metadata, Repository, StoredEvent
from m8.eventsourcing.memory import InMemoryEventRecorder
from m8.keyrotator.keks import KekPublicKeys
from m8.keyrotator.service import KeyRotator
from m8.keyrotator.signing_keys import SigningKeys
from m8.keyrotator.upload_keys import COLLECTION, UploadKeyStore
from m8.reactors.metrics import ReactorMetrics
from m8.reactors.path_leases import GIVEN_BACK, Held, LeaseTerms, PathLeases, Taken
from m8.reactors.reactor import Reactor
from m8.reactors.retry import RetryPolicy
from m8.reactors.sealed_keys import SealedUploadKeys
from m8.reactors.stores import StoreAdapters
from m8.stores.adapters import TransientUpstreamError, UpstreamSecret, UpstreamVersion

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIFETIME = timedelta(minutes=15)
ALICE = Metadata(actor="alice", correlation_id="corr-alice")
STORE = "vault-a"


class Clock:
    """The time every handler of the world reads; tests move it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


class FakeSigning:
    """The rotator's signing key, without its MongoDB collection."""

    def __init__(self) -> None:
        self.key = RotatorSigningKey.generate("rsk-1")

    async def current_until(self) -> tuple[RotatorSigningKey, datetime]:
        return self.key, T0 + timedelta(days=30)


@dataclass
class Lease:
    holder: str
    owner: str
    until: datetime


class MemoryLeases:
    """PathLeases in memory, `owner`'s view: the same rules of who may take a lease."""

    def __init__(self, owner: str = "reactor", leases: dict[str, Lease] | None = None) -> None:
        self.owner = owner
        self.leases: dict[str, Lease] = {} if leases is None else leases
        self.refused = 0  # how often an upload found its path held by another

    def of(self, owner: str) -> MemoryLeases:
        """The same leases, taken by another reactor."""
        return MemoryLeases(owner, self.leases)

    async def take(
        self, path: str, upload_id: str, until: datetime, now: datetime, settled: str | None = None
    ) -> Taken | Held:
        held = self.leases.get(path)
        ours = held is not None and (held.holder, held.owner) == (upload_id, self.owner)
        if held is not None and not ours and held.holder != settled and held.until >= now:
            self.refused += 1
            return Held(held.holder, held.until)
        self.leases[path] = Lease(upload_id, self.owner, until)
        return Taken(None if held is None else held.holder)

    async def renew(self, path: str, upload_id: str, until: datetime) -> bool:
        held = self.leases.get(path)
        if held is None or (held.holder, held.owner) != (upload_id, self.owner):
            return False
        if held.until == GIVEN_BACK:
            return False
        held.until = until
        return True

    async def give_back(self, path: str, upload_id: str) -> None:
        held = self.leases.get(path)
        if held is not None and (held.holder, held.owner) == (upload_id, self.owner):
            held.until = GIVEN_BACK


@dataclass
class FakeUpstream:
    """An upstream store that keeps versions in a dict; `failures` transient errors first;
    each put awaits `before_put` first, if set."""

    store_type: ClassVar[str] = "vault"
    name: str = STORE
    failures: int = 0
    versions: dict[str, list[tuple[bytes, str, str]]] = field(default_factory=dict)
    before_put: Callable[[], Awaitable[None]] | None = None

    async def put(
        self,
        path: str,
        value: bytes,
        idempotency_key: str,
        fingerprint: str,
        before_write: Callable[[], None] = lambda: None,
    ) -> UpstreamVersion:
        if self.before_put is not None:
            await self.before_put()
        if self.failures:
            self.failures -= 1
            raise TransientUpstreamError("unavailable", store=self.name, path=path, action="write")
        versions = self.versions.setdefault(path, [])
        for n, (_, key, _) in enumerate(versions, start=1):
            if key == idempotency_key:
                return UpstreamVersion(str(n), created=False)
        before_write()
        versions.append((value, idempotency_key, fingerprint))
        return UpstreamVersion(str(len(versions)), created=True)

    async def current(self, path: str) -> UpstreamSecret | None:
        versions = self.versions.get(path)
        if not versions:
            return None
        _, upload_id, fingerprint = versions[-1]
        return UpstreamSecret(str(len(versions)), True, upload_id, fingerprint)

    async def written(self, path: str, upload_id: str) -> UpstreamSecret | None:
        for n, (_, key, fingerprint) in enumerate(self.versions.get(path, []), start=1):
            if key == upload_id:
                return UpstreamSecret(str(n), True, upload_id, fingerprint or None)
        return None

    def values(self, path: str) -> list[bytes]:
        return [value for value, _, _ in self.versions.get(path, [])]


class FakeAdapters:
    """StoreAdapters with one fake upstream for every store."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    def get(self, store: object, fingerprint_key: FingerprintKey) -> FakeUpstream:
        return self.upstream


class SealedKeysFromRecords:
    """The reactor's view of the rotator's `upload_keys`, on the in-memory records."""

    def __init__(self, recorder: InMemoryEventRecorder) -> None:
        self.records = recorder.records(COLLECTION)

    async def get(self, key_id: str) -> SealedUploadKey | None:
        doc = await self.records.get(key_id)
        if doc is None:
            return None
        return SealedUploadKey.from_dict(
            {
                "key_id": key_id,
                "kek_id": doc["kek_id"],
                "sealed_private_key": doc["sealed_private_key"],
            }
        )


class World:
    """One in-memory recorder, one clock, and the handlers on them."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.recorder = InMemoryEventRecorder()
        # The event types of each append handed to the outbox, in order.
        self.appended: list[list[str]] = []
        self.repository = Repository(
            self.recorder, on_append=lambda events: self.appended.append(_types(events))
        )
        self.kek = Kek.generate("vault-1")
        self.upload_keys = UploadKeyStore(self.recorder)
        self.rotator = KeyRotator(
            self.repository,
            self.upload_keys,
            cast(SigningKeys, FakeSigning()),
            KekPublicKeys({"vault": [self.kek.public]}),
            LIFETIME,
            now=self.clock,
        )
        self.commands = Commands(self.repository, now=self.clock)
        self.upstream = FakeUpstream()
        self.receipt_key = ReceiptSigningKey.generate("receipt-1")
        self.fingerprint_key = FingerprintKey.generate()
        self.leases = MemoryLeases()
        self.reactor = self.another_reactor(self.leases)

    def another_reactor(self, leases: MemoryLeases) -> Reactor:
        """A vault reactor on this world, taking leases as `leases.owner`."""
        return Reactor(
            "vault",
            self.repository,
            cast(SealedUploadKeys, SealedKeysFromRecords(self.recorder)),
            cast(StoreAdapters, FakeAdapters(self.upstream)),
            KekRing([self.kek]),
            self.fingerprint_key,
            RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001),
            self.receipt_key,
            cast(PathLeases, leases),
            LeaseTerms.for_upstream_timeout(60),
            ReactorMetrics(),
            now=self.clock,
        )

    async def add_store(self, name: str = STORE, store_type: str = "vault") -> None:
        await self.repository.update(
            StoreCatalog, CATALOG_ID, lambda c: c.register(name, store_type, {}), ALICE
        )

    async def issue(self, path: str, store: str | None = STORE) -> SignedStatement:
        return await self.rotator.issue(store, path, ALICE)

    def command(
        self,
        signed: SignedStatement,
        value: bytes = b"s3cret-value",
        upload_id: str | None = None,
        **binding: str,
    ) -> UploadCommand:
        """What m8ctl sends for `value` under the key of `signed` (`binding` overrides)."""
        statement = signed.statement
        upload_id = upload_id or new_upload_id()
        bound = Binding(upload_id, statement.key_id, statement.store_id, statement.path)
        encrypted: EncryptedUpload = seal_envelope(
            value, replace(bound, **binding), statement.public_key
        )
        wire = encrypted.to_dict()
        return UploadCommand(
            upload_id=upload_id,
            key_id=statement.key_id,
            client_public_key=wire["client_public_key"],
            nonce=wire["nonce"],
            ciphertext=wire["ciphertext"],
            store=statement.store_id,
            path=statement.path,
            requested_by="alice",
        )

    async def request(self, command: UploadCommand) -> StoredEvent:
        """The API records the upload; its SecretUploadRequested as stored."""
        await self.commands.request_upload(command, ALICE)
        events = await self.recorder.load(Secret.aggregate_type, secret_id(STORE, command.path))
        return next(e for e in events if e.data.get("upload_id") == command.upload_id)

    async def upload(self, command: UploadCommand) -> Upload:
        secret = await self.repository.load(Secret, secret_id(STORE, command.path))
        return secret.upload(command.upload_id)

    async def upload_of(self, requested: StoredEvent) -> Upload:
        """The upload that `requested` (its SecretUploadRequested) made, as it stands."""
        secret = await self.repository.load(Secret, requested.aggregate_id)
        return secret.upload(str(requested.data["upload_id"]))

    async def events_of(self, aggregate_type: str, aggregate_id: str) -> list[str]:
        return [e.event_type for e in await self.recorder.load(aggregate_type, aggregate_id)]


def _types(events: Sequence[StoredEvent]) -> list[str]:
    return [event.event_type for event in events]
