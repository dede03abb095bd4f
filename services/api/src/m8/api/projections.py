"""The API's read models, every document a pure function of events.

- `rm_uploads`: one document per upload (by upload id): status, outcome and its reactor's
  receipt with the ciphertext hash it binds, who and when. Read by upload id, and by
  (store, path, requested_at) as a secret's history. Its status is the Secret's, except
  that a pending upload whose key the rotator destroyed as expired is `expired`: the
  rotator's UploadKeyDestroyed(expired) is the trigger, not the clock, because only
  then is it sure no reactor can still store the upload.
- `rm_secrets`: one small document per secret (store and path): its current fingerprint.
- `rm_schema`: one marker per version of these read models that they have caught up with
  (`SecretReadModels.catch_up`).

Never a value or a ciphertext (its SHA-256 only). A Secret event changes one upload and
the secret's current state, so `SecretReadModels` writes just those two documents per
event, and an UploadKeyDestroyed the document of the upload that claimed the key; its
`refresh` and `rebuild` write them all, with the same functions. Written through the
recorder port (`write_read_model`), so they need no driver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime

from m8.domain import Secret, UploadKey, secret_id
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
    SecretUploadSuperseded,
    UploadKeyDestroyed,
)
from m8.eventsourcing import DomainEvent, DuplicateRecord, EventRecorder, StoredEvent, registry
from m8.eventsourcing import Record as Document

UPLOADS = "rm_uploads"
SECRETS = "rm_secrets"
SCHEMA = "rm_schema"
# Raised when a version computes documents that older versions' documents lack or get
# wrong (2: an upload whose key the rotator destroyed as expired is `expired`), so that
# `catch_up` recomputes them once after an upgrade.
READ_MODELS_VERSION = 2


def upload_document(own: Sequence[StoredEvent], key: Sequence[StoredEvent] = ()) -> Document:
    """An upload, from its own events (those of its secret that carry its upload id) and
    those of its upload key."""
    decoded = [event.decode(registry) for event in own]
    first = decoded[0]
    assert isinstance(first, SecretUploadRequested)
    upload = Secret.replay(own[0].aggregate_id, decoded).upload(first.upload_id)
    status, updated_at = upload.status, own[-1].recorded_at
    expired = _expired_at(key)
    if status == "pending" and expired is not None:
        status, updated_at = "expired", max(updated_at, expired)
    return {
        "_id": upload.upload_id,
        "store": first.store,
        "path": first.path,
        "key_id": upload.key_id,
        "status": status,
        "requested_by": upload.requested_by,
        "requested_at": own[0].recorded_at,
        "updated_at": updated_at,
        "fingerprint": upload.fingerprint,
        "upstream_version": upload.upstream_version,
        "reason": upload.reason,
        "detail": upload.detail,
        "receipt": receipt(decoded),
        # What the receipt binds (m8.crypto.receipts): m8ctl checks it is its own.
        "ciphertext_sha256": first.ciphertext_sha256,
    }


def _expired_at(key: Sequence[StoredEvent]) -> datetime | None:
    """When the rotator destroyed the key as expired, if it did."""
    for stored in key:
        event = stored.decode(registry)
        if isinstance(event, UploadKeyDestroyed) and event.reason == "expired":
            return stored.recorded_at
    return None


def receipt(own: Sequence[DomainEvent]) -> Document | None:
    """The reactor's receipt of the upload's latest outcome, as GET /v1/uploads shows it.

    The latest: after a re-drive a stored outcome follows a failed one. None while pending,
    and for outcomes recorded before reactors signed them.
    """
    outcomes = [
        e
        for e in own
        if isinstance(
            e, SecretStored | SecretUploadRejected | SecretUploadSuperseded | SecretStoreFailed
        )
    ]
    last = outcomes[-1] if outcomes else None
    if last is None or last.receipt_key_id is None or last.receipt_signature is None:
        return None
    return {"receipt_key_id": last.receipt_key_id, "signature": last.receipt_signature}


def _by_upload(events: Sequence[StoredEvent]) -> dict[str, list[StoredEvent]]:
    """A secret's events grouped by upload, in the order the uploads were requested."""
    groups: dict[str, list[StoredEvent]] = {}
    for event in events:
        groups.setdefault(str(event.data["upload_id"]), []).append(event)
    return groups


def secret_document(aggregate_id: str, events: Sequence[StoredEvent]) -> Document:
    """The secret's current state: the value of the latest accepted upload that is stored.

    By request, not by outcome: uploads to a path land upstream in the order they were
    accepted, but an older upload's outcome may be recorded after a newer one's (its
    reactor died between writing and recording; see m8.reactors.reactor)."""
    decoded = [(event, event.decode(registry)) for event in events]
    requests = {d.upload_id: d for _, d in decoded if isinstance(d, SecretUploadRequested)}
    order = {upload_id: n for n, upload_id in enumerate(requests)}
    stored = sorted(
        ((event, d) for event, d in decoded if isinstance(d, SecretStored)),
        key=lambda pair: order[pair[1].upload_id],
    )
    first = next(iter(requests.values()))
    current: Document = {
        "fingerprint": None,
        "upstream_version": None,
        "stored_at": None,
        "stored_by": None,
    }
    if stored:
        event, last = stored[-1]
        current = {
            "fingerprint": last.fingerprint,
            "upstream_version": last.upstream_version,
            "stored_at": event.recorded_at,
            "stored_by": requests[last.upload_id].requested_by,
        }
    return {
        "_id": aggregate_id,
        "store": first.store,
        "path": first.path,
        **current,
        "updated_at": events[-1].recorded_at,
    }


class SecretReadModels:
    """Keeps rm_uploads and rm_secrets current: per event, its upload and its secret.

    Idempotent and order-proof: each document is computed from every event stored so far
    and written only over an older state (the version stamp: that of the secret, then of
    the upload's key, see `_stamp`). So replicas may run any of this at once.
    """

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder

    async def handle(self, event: StoredEvent) -> None:
        """Projects one Secret event or UploadKeyDestroyed; ignores every other."""
        if event.aggregate_type == Secret.aggregate_type:
            events = await self.recorder.load(Secret.aggregate_type, event.aggregate_id)
            upload_id = str(event.data["upload_id"])
            own = _by_upload(events).get(upload_id)
            if own is not None:
                key_id = str(own[0].data["key_id"])
                key = await self.recorder.load(UploadKey.aggregate_type, key_id)
                await self.project_upload(events, upload_id, key)
        elif event.event_type == UploadKeyDestroyed.event_type:
            key = await self.recorder.load(UploadKey.aggregate_type, event.aggregate_id)
            replayed = UploadKey.replay(event.aggregate_id, (e.decode(registry) for e in key))
            if replayed.issued is not None and replayed.claimed_by is not None:
                where = secret_id(replayed.issued.store, replayed.issued.path)
                events = await self.recorder.load(Secret.aggregate_type, where)
                await self.project_upload(events, replayed.claimed_by, key)

    async def project_upload(
        self, events: Sequence[StoredEvent], upload_id: str, key: Sequence[StoredEvent]
    ) -> Document | None:
        """Writes the upload's document and its secret's, from the secret's events and
        those of the upload's key (none: the document is stamped as of no key event);
        returns the upload's document (None: the secret has no such upload)."""
        own = _by_upload(events).get(upload_id)
        if own is None:
            return None
        document = upload_document(own, key)
        await self.recorder.write_read_model(
            UPLOADS, document, _stamp(events[-1].version, len(key))
        )
        await self._write_secret(events[0].aggregate_id, events)
        return document

    async def catch_up(self) -> bool:
        """Brings read models written by an older version up to this one, once: unless
        the marker of READ_MODELS_VERSION is there, `refresh`, then set it. True if this
        call refreshed.

        At the API's start, before it projects live events. Several replicas starting at
        once may each refresh; that is harmless, as every write is.
        """
        markers = self.recorder.records(SCHEMA)
        marker = f"read_models_v{READ_MODELS_VERSION}"
        if await markers.get(marker) is not None:
            return False
        await self.refresh()
        with contextlib.suppress(DuplicateRecord):  # another replica was as quick
            await markers.insert({"_id": marker})
        return True

    async def rebuild(self) -> int:
        """Recomputes both read models from scratch; returns how many secrets."""
        await self.recorder.clear_read_model(UPLOADS)
        await self.recorder.clear_read_model(SECRETS)
        return await self.refresh()

    async def refresh(self) -> int:
        """Recomputes every document from the event store over the current ones (which
        stay readable meanwhile); returns how many secrets."""
        count = 0
        async for aggregate_id, events in self.recorder.aggregates(Secret.aggregate_type):
            for own in _by_upload(events).values():
                await self._write_upload(own, events[-1].version)
            await self._write_secret(aggregate_id, events)
            count += 1
        return count

    async def _write_upload(self, own: Sequence[StoredEvent], secret_version: int) -> None:
        key = await self.recorder.load(UploadKey.aggregate_type, str(own[0].data["key_id"]))
        await self.recorder.write_read_model(
            UPLOADS, upload_document(own, key), _stamp(secret_version, len(key))
        )

    async def _write_secret(self, aggregate_id: str, events: Sequence[StoredEvent]) -> None:
        await self.recorder.write_read_model(
            SECRETS, secret_document(aggregate_id, events), events[-1].version
        )


def _stamp(secret_version: int, key_version: int) -> int:
    """One version for a document computed from two aggregates: the secret's first, then
    the key's. A key has at most three events (issued, claimed, destroyed)."""
    return secret_version * 4 + min(key_version, 3)
