"""The key rotator's handlers: issue upload keys, destroy them when their upload ends or they
expire, and the loop that keeps the sweep and the signing key rotation going.

Restart safety: a key is stored with its UploadKeyIssued event in one MongoDB transaction,
and its statement leaves only after the commit. A rotator that dies mid-request either
committed (the key exists unused, and the sweep destroys it at expiry) or did not (nothing
exists); the caller got no answer, times out and asks again, and gets a new key id. So
every statement a client holds has its key, and no key id is issued twice (uuid4, and the
UploadKey aggregate's version index would refuse a second issue).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from m8.crypto import (
    SignedStatement,
    UploadKeyPair,
    UploadKeyStatement,
    format_utc,
    seal_upload_key,
    sign_statement,
)
from m8.domain import CATALOG_ID, Secret, StoreCatalog, UploadKey, check_path
from m8.domain.errors import UnknownUpload
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadSuperseded,
    UploadKeyIssued,
)
from m8.eventsourcing import (
    ConcurrencyConflict,
    EventStoreUnavailable,
    Metadata,
    NotRecorded,
    Repository,
    StoredEvent,
    Transaction,
    UnknownEventType,
)
from m8.keyrotator import clock
from m8.keyrotator.keks import KekPublicKeys
from m8.keyrotator.metrics import KeyRotatorMetrics
from m8.keyrotator.signing_keys import SigningKeys
from m8.keyrotator.upload_keys import UploadKeyStore
from m8.messaging import PoisonMessage, TransientError

log = logging.getLogger(__name__)

ACTOR = "keyrotator"


class KeyRotator:
    """Issues one-time upload keys and destroys them; thin handlers over the aggregates."""

    def __init__(
        self,
        repository: Repository,
        upload_keys: UploadKeyStore,
        signing: SigningKeys,
        keks: KekPublicKeys,
        lifetime: timedelta,
        now: Callable[[], datetime] = clock.now,
        metrics: KeyRotatorMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.now = now  # the clock of issue and expiry (tests inject their own)
        self.metrics = KeyRotatorMetrics() if metrics is None else metrics
        self.upload_keys = upload_keys
        self.signing = signing
        self.keks = keks
        self.lifetime = lifetime

    async def issue(self, store_name: str | None, path: str, metadata: Metadata) -> SignedStatement:
        """A new upload key for `path` in `store_name` (None: the default store), signed.

        Raises InvalidPath, UnknownStore, StoreInactive, NoDefaultStore or MissingKek.
        """
        check_path(path)
        catalog = await self.repository.load(StoreCatalog, CATALOG_ID)
        store = catalog.target(store_name)
        kek = self.keks.newest(store.store_type)
        signer, signer_not_after = await self.signing.current_until()
        created_at = clock.to_ms(self.now())
        # Never outlive the signer: m8ctl drops its pin at not_after (rotation makes this
        # rare; the cap covers the milliseconds between the look and now).
        expires_at = min(clock.to_ms(created_at + self.lifetime), signer_not_after)
        pair = UploadKeyPair.generate()
        sealed = seal_upload_key(pair, kek)
        signed = sign_statement(
            UploadKeyStatement(
                pair.key_id, pair.public_key_bytes, store.name, path, expires_at, kek.kek_id
            ),
            signer,
        )
        issued = UploadKeyIssued(
            key_id=pair.key_id,
            store=store.name,
            store_type=store.store_type,
            path=path,
            kek_id=kek.kek_id,
            signing_key_id=signer.signing_key_id,
            expires_at=format_utc(expires_at),
        )

        async def record(transaction: Transaction) -> None:
            key = UploadKey(pair.key_id)
            key.issue(issued)
            await self.upload_keys.insert(transaction, sealed, store, path, created_at, expires_at)
            await transaction.save(key, metadata)

        await self.repository.in_transaction(record)
        self.metrics.issued.labels(store.store_type, store.name).inc()
        log.info(
            "upload key issued",
            extra={
                "key_id": pair.key_id,
                "store": store.name,
                "path": path,
                "kek_id": kek.kek_id,
                "signing_key_id": signer.signing_key_id,
            },
        )
        return signed

    async def destroy(self, key_id: str, reason: str, metadata: Metadata) -> bool:
        """Deletes the sealed key and records UploadKeyDestroyed, once; True if this call did."""

        async def destroy(transaction: Transaction) -> bool:
            key = await transaction.load(UploadKey, key_id)
            # Deleted even when never issued or destroyed already: nothing may outlive that.
            await self.upload_keys.delete(transaction, key_id)
            if not key.destroy(reason):
                return False
            await transaction.save(key, metadata)
            return True

        # A conflict means another rotator destroyed it meanwhile: the next look sees that.
        if not await self.repository.in_transaction(destroy):
            return False
        self.metrics.destroyed.labels(reason).inc()
        log.info("upload key destroyed", extra={"key_id": key_id, "reason": reason})
        return True

    async def on_outcome(self, message: StoredEvent) -> None:
        """Destroys the key of an upload that ended (consumer of `m8.keyrotator`).

        Acts on the outcome as the event store holds it, never on the message alone:
        whoever can publish to the broker must not get a key destroyed (and an upload
        still in flight turned into a rejection) with an outcome no reactor recorded.
        """
        if message.aggregate_type != Secret.aggregate_type:
            raise PoisonMessage(f"a {message.aggregate_type} event is not an upload outcome")
        try:
            stored, events = await self.repository.recorder.recorded(message)
            event = stored.decode()
            match event:
                case SecretStored(upload_id=upload_id):
                    reason = "used"
                case SecretUploadRejected(upload_id=upload_id):
                    reason = "rejected"
                case SecretUploadSuperseded(upload_id=upload_id):
                    reason = "superseded"
                case SecretStoreFailed(upload_id=upload_id):
                    # The key stays: the message waits in the dead-letter queue for a
                    # re-drive, which needs it. The sweep destroys it at expiry.
                    log.info("upload failed, its key is kept", extra={"upload_id": upload_id})
                    return
                case _:
                    raise PoisonMessage(f"a {stored.event_type} event is not an upload outcome")
            secret = Secret.replay(stored.aggregate_id, (e.decode() for e in events))
            key_id = secret.upload(upload_id).key_id
            await self.destroy(key_id, reason, stored.metadata.caused_by(stored, ACTOR))
        except NotRecorded as exc:
            raise PoisonMessage(str(exc)) from None
        except (UnknownEventType, TypeError, KeyError) as exc:
            raise PoisonMessage(f"undecodable {message.event_type}: {exc}") from None
        except UnknownUpload as exc:
            raise PoisonMessage(exc.detail) from None
        except (EventStoreUnavailable, ConcurrencyConflict) as exc:
            raise TransientError(f"could not destroy the upload key: {exc}") from exc

    async def sweep(self, batch: int = 100) -> int:
        """Destroys every key past its expiry with reason `expired`; returns how many."""
        metadata = Metadata(ACTOR, f"sweep-{uuid.uuid4().hex}")
        destroyed = 0
        try:
            while ids := await self.upload_keys.expired(clock.to_ms(self.now()), batch):
                for key_id in ids:
                    destroyed += await self.destroy(key_id, "expired", metadata)
                if len(ids) < batch:
                    break
        except Exception:
            self.metrics.sweeps.labels("failed").inc()
            raise
        self.metrics.sweeps.labels("ok").inc()
        return destroyed


async def every(interval: timedelta, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Runs `work` every `interval` until cancelled; a failed pass is logged and retried."""
    while True:
        try:
            await work()
        except Exception:
            log.exception("%s failed; retrying in %gs", what, interval.total_seconds())
        await asyncio.sleep(interval.total_seconds())
