"""The reactor's handler: a SecretUploadRequested in, exactly one outcome event out.

For each request (DESIGN section 2, steps 4 and 5): an upload whose outcome is final is
done already; otherwise the store must be known and active, the upload key issued for
this store and path, claimed by this upload, live and not destroyed; its sealed private
half must open with a KEK and the envelope with it, bound to the same upload, key, store
and path. Any "no" is a SecretUploadRejected and nothing goes upstream, unless the key is
only gone because an earlier delivery wrote the value upstream and stopped before it
recorded so: when upstream shows a version written by this upload (its id is in m8's
marks), SecretStored is recorded instead. Uploads to one path are written one at a time,
in the order they were accepted: the reactor holds the path's lease
(m8.reactors.path_leases) while it checks the key and writes, and an upload older than
one already stored is not written but recorded SecretUploadSuperseded; again unless
upstream shows that an earlier delivery of it wrote it (before the newer one, its reactor
having died before recording): that upload was stored, and is recorded so. Then the
value is fingerprinted and written upstream idempotently (the upload id is the
idempotency key), retrying transient errors; SecretStored follows. When upstream stays
away or refuses (or the adapter fails in a way it does not know), then
SecretStoreFailed is recorded and the message is dead-lettered for an operator to
re-drive; the re-driven copy is handled again (the outcome "failed" is not final).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar, TypeVar

from tenacity import RetryCallState

from m8.crypto import (
    Binding,
    BindingMismatch,
    CryptoError,
    DecryptionFailed,
    EncryptedUpload,
    FingerprintKey,
    KekRing,
    OpenedEnvelope,
    OutcomeReceipt,
    ReceiptSigningKey,
    SealedUploadKey,
    SecretBytes,
    UnknownKek,
    fingerprint,
    open_envelope,
    sign_receipt,
    unseal_upload_key,
)
from m8.crypto.encoding import b64encode
from m8.crypto.receipts import ReceiptStatus, is_sha256_hex
from m8.domain import CATALOG_ID, KeyRefusal, Secret, StoreCatalog, UploadKey
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
    SecretUploadSuperseded,
)
from m8.eventsourcing import (
    ConcurrencyConflict,
    EventStoreUnavailable,
    NotRecorded,
    Repository,
    StoredEvent,
    UnknownEventType,
)
from m8.messaging import PoisonMessage, TransientError
from m8.protocol.status import FINAL_OUTCOMES
from m8.reactors.metrics import ReactorMetrics
from m8.reactors.path_leases import (
    Hold,
    LeaseLost,
    LeaseTerms,
    LocalPaths,
    PathBusy,
    PathLeases,
    Taken,
)
from m8.reactors.retry import RetryPolicy
from m8.reactors.sealed_keys import SealedUploadKeys
from m8.reactors.stores import StoreAdapters, StoreConfigError
from m8.stores.adapters import (
    NotManagedByM8,
    TransientUpstreamError,
    UpstreamError,
    UpstreamSecret,
    UpstreamStore,
    UpstreamVersion,
)

log = logging.getLogger(__name__)

Outcome = SecretStored | SecretUploadRejected | SecretUploadSuperseded | SecretStoreFailed
# Waiting for a path's lease: first look again after this, then ever less often.
_FIRST_LEASE_PAUSE = 0.05
_MAX_LEASE_PAUSE = 1.0
# The longest a delivery waits for its path (this process's turn, then the lease) before
# it goes back to the end of its queue (PathBusy): uploads queued behind a busy path do
# not hold the slots of other paths, nor sit in hand through every broken connection and
# killed process, each of which would count against their queue's delivery limit.
PATH_WAIT = 5.0
T = TypeVar("T")


# Rejections that an earlier delivery may have caused itself: it wrote the value upstream,
# failed to record that, and its key was used up or destroyed before this redelivery.
KEY_GONE = frozenset({KeyRefusal.EXPIRED.value, KeyRefusal.DESTROYED.value, KeyRefusal.USED.value})


class Refusal(Exception):
    """Why an upload is not stored: `reason` is a fixed code, `detail` says more."""

    event: ClassVar[type[SecretUploadRejected] | type[SecretStoreFailed]]

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def outcome(self, request: SecretUploadRequested) -> SecretUploadRejected | SecretStoreFailed:
        """The event that records this refusal of `request`."""
        return self.event(**_about(request), reason=self.reason, detail=self.detail)


class SettledMeanwhile(Exception):
    """A twin delivery settled the upload while this one waited for its path."""


class Rejected(Refusal):
    """The upload can never be stored."""

    event = SecretUploadRejected


class StoreFailed(Refusal):
    """Storing failed for now; an operator re-drives the message once the cause is fixed."""

    event = SecretStoreFailed


def rejection(exc: CryptoError) -> Rejected:
    """The rejection for a sealed key or envelope that does not open or does not match."""
    if isinstance(exc, BindingMismatch):
        return Rejected("binding_mismatch", str(exc))
    if isinstance(exc, DecryptionFailed):
        return Rejected("bad_mac", str(exc))
    return Rejected("malformed_envelope", str(exc))


class Reactor:
    """Writes the uploads of one store type upstream and records their outcomes."""

    def __init__(
        self,
        store_type: str,
        repository: Repository,
        sealed_keys: SealedUploadKeys,
        stores: StoreAdapters,
        keks: KekRing,
        fingerprint_key: FingerprintKey,
        retry: RetryPolicy,
        receipt_key: ReceiptSigningKey,
        leases: PathLeases,
        lease: LeaseTerms,
        metrics: ReactorMetrics,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        path_wait: float = PATH_WAIT,
    ) -> None:
        self.store_type = store_type
        self.metrics = metrics  # this reactor's own, in a registry of its own
        # Held by an upload while it is written upstream, renewed while the work goes on.
        self.leases = leases
        self.lease = lease
        self.paths = LocalPaths()
        self.path_wait = path_wait
        self.now = now  # the clock of key expiry and leases (tests inject their own)
        self.repository = repository
        self.sealed_keys = sealed_keys
        self.stores = stores
        self.keks = keks
        self.fingerprint_key = fingerprint_key
        self.retry = retry
        self.receipt_key = receipt_key
        self.actor = f"reactor:{store_type}"

    async def handle(self, message: StoredEvent) -> None:
        """Handles one delivery; returns once its outcome is stored, so it may be acked."""
        with self.metrics.in_flight.labels(self.store_type).track_inprogress():
            try:
                await self._handle(message)
            except PathBusy:
                self.metrics.put_off.labels(self.store_type).inc()
                raise
            except (EventStoreUnavailable, LeaseLost) as exc:
                # The runner tries again, then requeues; the upstream write is idempotent.
                raise TransientError(str(exc)) from exc

    async def _handle(self, message: StoredEvent) -> None:
        secret, request = await self._request(message)
        settled = secret.upload(request.upload_id)
        if settled.status in FINAL_OUTCOMES:
            log.info("upload already settled", extra=_fields(request))
            self._count(request, "duplicate", settled.reason or "")
            return
        # This process's handlers of one path take turns, up to the recorded outcome, so
        # the next finds the lease free by the outcome instead of waiting for it.
        deadline = asyncio.get_running_loop().time() + self.path_wait
        async with self.paths.turn(secret.id, deadline):
            outcome: Outcome
            try:
                outcome = await self._store(request, secret, deadline)
            except SettledMeanwhile:
                log.info("upload settled meanwhile by another delivery", extra=_fields(request))
                self._count(request, "duplicate", "")
                return
            except StoreFailed as failed:
                await self._settle(message, secret, request, failed.outcome(request))
                # Its attempts are over; a re-drive takes the lease anew.
                await self.leases.give_back(secret.id, request.upload_id)
                raise PoisonMessage(str(failed)) from None
            except Rejected as refused:
                outcome = refused.outcome(request)
            await self._settle(message, secret, request, outcome)

    async def _store(
        self, request: SecretUploadRequested, secret: Secret, deadline: float
    ) -> SecretStored | SecretUploadSuperseded:
        """Writes the upload upstream, unless a newer upload to its path was stored first;
        Rejected or StoreFailed say why it did not, SettledMeanwhile that a twin delivery
        settled it, PathBusy that another held the path past `deadline` (loop time)."""
        adapter = await self._adapter(request)
        # `stored` is final: a newer upload stored already decides it without the lease.
        newer = secret.stored_after(request.upload_id)
        if newer is not None:
            return await self._superseded(adapter, request, newer)
        # Under the path's lease nobody else writes this path, so what the Secret says now
        # stands until our write is done.
        async with self._lease(adapter, request, secret, deadline) as (newer, hold):
            if newer is not None:
                return await self._superseded(adapter, request, newer)
            # The key is checked only now: one that expired or was destroyed while this
            # upload waited for its path must not open it.
            try:
                sealed = await self._sealed_key(request)
            except Rejected as refused:
                if refused.reason not in KEY_GONE:
                    raise
                earlier = await self._written_before(adapter, request)
                if earlier is None or earlier.fingerprint is None:
                    # Without the fingerprint m8 recorded upstream there is nothing true
                    # to record, and the value that would give it is out of reach now.
                    raise
                return _stored(request, earlier.version, earlier.fingerprint)
            with self._open(request, sealed) as opened:
                value_fingerprint = fingerprint(opened.value, self.fingerprint_key)
                version = await self._put(adapter, request, opened.value, value_fingerprint, hold)
        return _stored(request, version.version, value_fingerprint)

    async def _request(self, message: StoredEvent) -> tuple[Secret, SecretUploadRequested]:
        """The Secret aggregate and the request, as the event store has them."""
        if message.aggregate_type != Secret.aggregate_type:
            raise PoisonMessage(f"a {message.aggregate_type} event is not an upload request")
        # The event store, not the message, says what was requested: whoever can publish
        # to the broker must not get m8 to act on an upload that the API never accepted.
        try:
            stored, events = await self.repository.recorder.recorded(message)
        except NotRecorded as exc:
            raise PoisonMessage(str(exc)) from None
        try:
            request = stored.decode()
            secret = Secret.replay(message.aggregate_id, (e.decode() for e in events))
        except (UnknownEventType, TypeError, KeyError) as exc:
            raise PoisonMessage(f"the events of {message.aggregate_id!r} do not decode") from exc
        if not isinstance(request, SecretUploadRequested):
            raise PoisonMessage(f"a {stored.event_type} event is not an upload request")
        if not is_sha256_hex(request.ciphertext_sha256):
            # The API always records one; without it there is no receipt to sign.
            raise PoisonMessage(f"upload {request.upload_id} has no valid ciphertext_sha256")
        if request.store_type != self.store_type:
            raise PoisonMessage(
                f"a {request.store_type} upload reached the {self.store_type} reactor"
            )
        return secret, request

    async def _adapter(self, request: SecretUploadRequested) -> UpstreamStore:
        """The adapter of the target store, which must be a known, active store of ours."""
        catalog = await self.repository.load(StoreCatalog, CATALOG_ID)
        store = catalog.stores.get(request.store)
        if store is None or store.store_type != self.store_type:
            raise Rejected(
                "unknown_store", f"there is no {self.store_type} store named {request.store!r}"
            )
        if not store.active:
            raise Rejected("store_inactive", f"store {store.name!r} is inactive")
        try:
            return self.stores.get(store, self.fingerprint_key)
        except StoreConfigError as exc:
            raise StoreFailed("store_misconfigured", str(exc)) from None

    async def _sealed_key(self, request: SecretUploadRequested) -> SealedUploadKey:
        """The sealed private key, if the upload key may serve this upload now."""
        key = await self.repository.load(UploadKey, request.key_id)
        refused = key.refusal(request.upload_id, request.store, request.path, self.now())
        if refused is not None:
            raise Rejected(refused.reason.value, refused.detail)
        if key.claimed_by != request.upload_id:
            # The API claims the key in the transaction that records the request: an
            # unclaimed key means a request the API never made.
            raise Rejected(KeyRefusal.USED.value, "the upload key was never claimed")
        try:
            sealed = await self.sealed_keys.get(request.key_id)
        except CryptoError as exc:
            raise rejection(exc) from None
        if sealed is None:
            raise Rejected("key_destroyed", "the sealed upload key is gone")
        return sealed

    @contextlib.asynccontextmanager
    async def _lease(
        self,
        adapter: UpstreamStore,
        request: SecretUploadRequested,
        secret: Secret,
        deadline: float,
    ) -> AsyncIterator[tuple[str | None, Hold]]:
        """Holds the path's lease for this upload, renewed, while the block runs. Gives the
        newer upload that supersedes this one, if any, and the hold that writes check."""
        taken, until = await self._take(request, secret, deadline)
        hold = Hold(self.leases, secret.id, request.upload_id, self.lease, until, self.now)
        # Renewed from the start: what the lease's taker checks first may read upstream.
        renewing = asyncio.create_task(hold.renew_until_cancelled())
        try:
            yield await self._newer(adapter, request, secret, taken), hold
        except Refusal:
            raise  # its outcome, recorded next, frees the lease
        except Exception:
            # Retried or requeued: the next delivery need not wait for the lease to run out.
            # (Not on cancellation: a request of ours may still reach upstream.) Renewal
            # stops first, or it could take back the lease just given back.
            await _stop(renewing)
            with contextlib.suppress(EventStoreUnavailable):
                await self.leases.give_back(secret.id, request.upload_id)
            raise
        finally:
            await _stop(renewing)

    async def _take(
        self, request: SecretUploadRequested, secret: Secret, deadline: float
    ) -> tuple[Taken, datetime]:
        """Takes the path's lease for this upload, waiting while another holds it and its
        upload has not settled, until `deadline` (loop time; then PathBusy). Returns who
        held it before, and when it runs out."""
        loop = asyncio.get_running_loop()
        pause, settled = _FIRST_LEASE_PAUSE, None
        while True:
            now = self.now()
            until = now + self.lease.ttl
            taken = await self.leases.take(secret.id, request.upload_id, until, now, settled)
            if isinstance(taken, Taken):
                return taken, until
            secret = await self.repository.load(Secret, secret.id)
            if _has_settled(secret, taken.holder):
                settled = taken.holder  # free now: take it from that upload
                continue
            left = deadline - loop.time()
            if left <= 0:
                raise PathBusy(f"upload {taken.holder} holds the path")
            if pause == _FIRST_LEASE_PAUSE:  # once per delivery, not at every look
                log.info(
                    "waiting for another upload to the same path",
                    extra={**_fields(request), "holder": taken.holder},
                )
            await asyncio.sleep(min(pause, left, max((taken.until - now).total_seconds(), 0.0)))
            pause = min(pause * 2, _MAX_LEASE_PAUSE)

    async def _newer(
        self,
        adapter: UpstreamStore,
        request: SecretUploadRequested,
        secret: Secret,
        taken: Taken,
    ) -> str | None:
        """Once the lease is ours: the newer upload that supersedes this one, if any;
        SettledMeanwhile if a twin settled this one."""
        if taken.previous is not None:
            # Whoever held it (a twin of ours included) may have settled an upload since.
            secret = await self.repository.load(Secret, secret.id)
        if secret.upload(request.upload_id).status in FINAL_OUTCOMES:
            raise SettledMeanwhile()
        newer = secret.stored_after(request.upload_id)
        # Taken from another upload whose lease expired unsettled: it may have written
        # upstream and not recorded so yet. Upstream says whether a newer one is there.
        # (Our own upload too: an earlier try of it may have taken the path that way and
        # stopped before it checked.)
        expired = taken.previous is not None and not _has_settled(secret, str(taken.previous))
        if newer is None and expired:
            newer = await self._written_by_newer(adapter, request, secret)
        return newer

    async def _written_by_newer(
        self, adapter: UpstreamStore, request: SecretUploadRequested, secret: Secret
    ) -> str | None:
        """The upload of this path accepted after ours whose value is upstream now, if any."""
        current = await self._upstream(
            adapter, request, "read", lambda: adapter.current(request.path)
        )
        if current is None or current.upload_id not in secret.uploads:
            return None
        order = list(secret.uploads)
        later = order.index(current.upload_id) > order.index(request.upload_id)
        return current.upload_id if later else None

    async def _superseded(
        self, adapter: UpstreamStore, request: SecretUploadRequested, newer: str
    ) -> SecretStored | SecretUploadSuperseded:
        """Superseded by `newer`; unless an earlier delivery wrote this upload upstream
        before `newer` and stopped before recording it (its reactor died, its lease ran
        out, `newer` was written over it): then it was stored, and is recorded so."""
        earlier = await self._written_before(adapter, request)
        if earlier is None:
            return _superseded(request, newer)
        value_fingerprint = earlier.fingerprint or await self._fingerprint(request)
        if value_fingerprint is None:
            log.warning(
                "upload found upstream under a newer one, with no fingerprint to record",
                extra=_fields(request),
            )
            return _superseded(request, newer)
        return _stored(request, earlier.version, value_fingerprint)

    async def _written_before(
        self, adapter: UpstreamStore, request: SecretUploadRequested
    ) -> UpstreamSecret | None:
        """The version an earlier delivery of this upload wrote upstream, if any."""
        found = await self._upstream(
            adapter, request, "read", lambda: adapter.written(request.path, request.upload_id)
        )
        if found is not None:
            log.info(
                "upload found upstream, written by an earlier delivery", extra=_fields(request)
            )
        return found

    async def _fingerprint(self, request: SecretUploadRequested) -> str | None:
        """The upload's value fingerprint, while its key can still open it."""
        try:
            sealed = await self._sealed_key(request)
            with self._open(request, sealed) as opened:
                return fingerprint(opened.value, self.fingerprint_key)
        except Refusal:
            return None

    def _open(self, request: SecretUploadRequested, sealed: SealedUploadKey) -> OpenedEnvelope:
        """The decrypted envelope, its binding checked against the request."""
        if request.ciphertext is None:
            raise Rejected("key_destroyed", "the ciphertext was redacted after its key was gone")
        try:
            expected = Binding(request.upload_id, request.key_id, request.store, request.path)
            encrypted = EncryptedUpload.from_dict(
                {
                    "client_public_key": request.client_public_key,
                    "nonce": request.nonce,
                    "ciphertext": request.ciphertext,
                }
            )
            # The receipt names the request's ciphertext_sha256, which m8ctl compares with
            # the hash of what it sent: only ever store the ciphertext that hash is of.
            if hashlib.sha256(encrypted.ciphertext).hexdigest() != request.ciphertext_sha256:
                raise Rejected(
                    "binding_mismatch", "the ciphertext does not match its recorded SHA-256"
                )
            with unseal_upload_key(sealed, self.keks) as private_key:
                return open_envelope(encrypted, private_key, expected)
        except UnknownKek as exc:
            # Not the upload's fault: this reactor lacks a live KEK. Once an operator adds
            # it, a re-drive stores the upload (if its key has not expired meanwhile).
            raise StoreFailed("unknown_kek", str(exc)) from None
        except CryptoError as exc:
            raise rejection(exc) from None

    async def _put(
        self,
        adapter: UpstreamStore,
        request: SecretUploadRequested,
        value: SecretBytes,
        value_fingerprint: str,
        hold: Hold,
    ) -> UpstreamVersion:
        """Writes upstream, retrying transient errors within the retry policy, each attempt
        only while the path's lease is certainly ours for longer than the attempt."""
        # The adapters take bytes: this copy cannot be wiped (see SecretBytes).
        plaintext = value.reveal()
        return await self._upstream(
            adapter,
            request,
            "write",
            lambda: self._put_once(adapter, request, plaintext, value_fingerprint, hold),
        )

    async def _upstream(
        self,
        adapter: UpstreamStore,
        request: SecretUploadRequested,
        action: str,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        """Runs `call` on upstream, retrying transient errors; StoreFailed when it fails."""

        def before_retry(state: RetryCallState) -> None:
            self.metrics.upstream_retries.labels(self.store_type, adapter.name).inc()
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "upstream %s failed, retrying: %s",
                action,
                error,
                extra={**_fields(request), "attempt": state.attempt_number},
            )

        try:
            async for attempt in self.retry.retrying(before_retry):
                with attempt:
                    return await call()
        except LeaseLost:
            raise
        except UpstreamError as exc:
            # The log gets what upstream said, for the operator; the event only the error's
            # detail (m8's words and a status or code, bounded): it reaches GET /v1/uploads.
            log.warning("upstream %s failed: %s", action, exc, extra=_fields(request))
            raise StoreFailed(_failure_reason(exc), exc.detail) from None
        except Exception as exc:
            # An adapter's bug. Its text could quote anything, the value too: name only its
            # type, and for whoever fixes it, where it was raised.
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "unexpected %s from the %s adapter",
                type(exc).__name__,
                self.store_type,
                extra={**_fields(request), "raised_at": f"{frame.filename}:{frame.lineno}"},
            )
            raise StoreFailed("upstream_refused", f"unexpected {type(exc).__name__}") from None
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _put_once(
        self,
        adapter: UpstreamStore,
        request: SecretUploadRequested,
        plaintext: bytes,
        value_fingerprint: str,
        hold: Hold,
    ) -> UpstreamVersion:
        hold.check()
        started, result = time.perf_counter(), "ok"
        try:
            # Checked again right before the request that writes: the requests before it
            # (reads, a write-ahead, logins) take time of the lease too.
            return await adapter.put(
                request.path, plaintext, request.upload_id, value_fingerprint, hold.check
            )
        except TransientUpstreamError:
            result = "transient"
            raise
        except Exception:
            result = "permanent"
            raise
        finally:
            self.metrics.upstream_seconds.labels(self.store_type, adapter.name, result).observe(
                time.perf_counter() - started
            )

    async def _settle(
        self,
        message: StoredEvent,
        secret: Secret,
        request: SecretUploadRequested,
        outcome: Outcome,
    ) -> None:
        """Appends the outcome to the Secret, unless a twin delivery settled it first.

        `secret` is as it was loaded for the request: appended to as it is unless another
        event of the secret came meanwhile, then loaded again."""
        outcome = self._signed(request, outcome)

        def record(secret: Secret) -> bool:
            match outcome:
                case SecretStored():
                    return secret.record_stored(outcome)
                case SecretUploadRejected():
                    return secret.record_rejected(outcome)
                case SecretUploadSuperseded():
                    return secret.record_superseded(outcome)
                case SecretStoreFailed():
                    return secret.record_failed(outcome)

        metadata = message.metadata.caused_by(message, actor=self.actor)
        try:
            recorded = record(secret)
            await self.repository.save(secret, metadata)
        except ConcurrencyConflict:
            _, recorded = await self.repository.update(
                Secret, message.aggregate_id, record, metadata
            )
        kind, reason = _kind(outcome)
        fields = {**_fields(request), "outcome": kind, "reason": reason}
        if not recorded:
            kind = "duplicate"
            log.info("upload settled meanwhile by another delivery", extra=fields)
        elif isinstance(outcome, SecretStored):
            fields["upstream_version"] = outcome.upstream_version
            log.info("upload stored", extra=fields)
        elif isinstance(outcome, SecretUploadSuperseded):
            fields["superseded_by"] = outcome.superseded_by
            log.info("upload superseded by a newer one stored first", extra=fields)
        else:
            log.warning("upload %s: %s", kind, outcome.detail, extra=fields)
        self._count(request, kind, reason)

    def _signed(self, request: SecretUploadRequested, outcome: Outcome) -> Outcome:
        """The outcome with this reactor's receipt, which m8ctl checks: the API cannot
        invent an outcome or a fingerprint without the reactor's receipt key, nor pass
        off the outcome of a ciphertext it swapped in as that of the one m8ctl sent."""
        signature = sign_receipt(_receipt(request, outcome), self.receipt_key)
        return dataclasses.replace(
            outcome,
            receipt_key_id=self.receipt_key.receipt_key_id,
            receipt_signature=b64encode(signature),
        )

    def _count(self, request: SecretUploadRequested, outcome: str, reason: str) -> None:
        # An unknown store's name came from the request: keep it out of the labels.
        store = "unknown" if reason == "unknown_store" else request.store
        self.metrics.uploads.labels(self.store_type, store, outcome, reason).inc()


def _fields(request: SecretUploadRequested) -> dict[str, str]:
    """What a log line may say about an upload (no path: ids and the store suffice)."""
    return {"upload_id": request.upload_id, "store": request.store}


def _failure_reason(error: UpstreamError) -> str:
    """The SecretStoreFailed reason for an adapter's error."""
    if isinstance(error, TransientUpstreamError):
        return "upstream_unavailable"
    if isinstance(error, NotManagedByM8):
        return "not_managed_by_m8"
    return "upstream_refused"


def _kind(outcome: Outcome) -> tuple[str, str]:
    match outcome:
        case SecretStored():
            return "stored", ""
        case SecretUploadRejected(reason=reason):
            return "rejected", reason
        case SecretUploadSuperseded():
            return "superseded", ""
        case SecretStoreFailed(reason=reason):
            return "failed", reason


def _receipt(request: SecretUploadRequested, outcome: Outcome) -> OutcomeReceipt:
    """What the reactor vouches for about the outcome of `request` (m8.crypto.receipts)."""
    status: ReceiptStatus
    version: str | None = None
    value_fingerprint: str | None = None
    match outcome:
        case SecretStored():
            status = "stored"
            version, value_fingerprint = outcome.upstream_version, outcome.fingerprint
        case SecretUploadRejected():
            status = "rejected"
        case SecretUploadSuperseded():
            status = "superseded"
        case SecretStoreFailed():
            status = "failed"
    return OutcomeReceipt(
        outcome.upload_id,
        outcome.store,
        outcome.path,
        status,
        version,
        value_fingerprint,
        # The request's, for every outcome: `_open` stores only a ciphertext that has it,
        # and a recovery in `_written_before` found a value an earlier delivery stored so.
        request.ciphertext_sha256,
    )


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancels `task` and waits until it has stopped (not for its result)."""
    task.cancel()
    await asyncio.wait([task])


def _has_settled(secret: Secret, upload_id: str) -> bool:
    """Whether the Secret knows `upload_id` and its outcome is final (its lease free). A
    `failed` upload may be re-driven and written again: its holder gives the lease back
    itself once it stopped trying."""
    upload = secret.uploads.get(upload_id)
    return upload is not None and upload.status in FINAL_OUTCOMES


def _about(request: SecretUploadRequested) -> dict[str, str]:
    """The fields every outcome of `request` repeats: which upload, where."""
    return {
        "upload_id": request.upload_id,
        "store": request.store,
        "store_type": request.store_type,
        "path": request.path,
    }


def _superseded(request: SecretUploadRequested, newer: str) -> SecretUploadSuperseded:
    return SecretUploadSuperseded(**_about(request), superseded_by=newer)


def _stored(request: SecretUploadRequested, version: str, value_fingerprint: str) -> SecretStored:
    return SecretStored(**_about(request), upstream_version=version, fingerprint=value_fingerprint)
