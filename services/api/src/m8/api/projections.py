"""The API's read models, every document a pure function of one aggregate's events.

- `rm_uploads`: one document per upload (by upload id): status, outcome and its reactor's
  receipt with the ciphertext hash it binds, who and when.
  Read by upload id, and by (store, path, requested_at) as a secret's history.
- `rm_secrets`: one small document per secret (store and path): its current fingerprint.
- `rm_upload_keys`: how each upload key ended, which tells an expired upload apart.

Never a value or a ciphertext (its SHA-256 only). A Secret event changes one upload and
the secret's current state, so `SecretReadModels` writes just those two documents per
event; a rebuild (`ProjectionRunner.rebuild` of the projections in PROJECTIONS) writes
them all, with the same functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from m8.domain import Secret, UploadKey
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
)
from m8.eventsourcing import DomainEvent, StoredEvent, registry
from m8.eventstore import MongoEventRecorder, Projection
from m8.eventstore.mongo import Document
from m8.eventstore.projections import VERSION_FIELD

UPLOADS = "rm_uploads"
SECRETS = "rm_secrets"
UPLOAD_KEYS = "rm_upload_keys"


def upload_document(own: Sequence[StoredEvent]) -> Document:
    """An upload, from its own events (those of its secret that carry its upload id)."""
    decoded = [event.decode(registry) for event in own]
    first = decoded[0]
    assert isinstance(first, SecretUploadRequested)
    upload = Secret.replay(own[0].aggregate_id, decoded).upload(first.upload_id)
    return {
        "_id": upload.upload_id,
        "store": first.store,
        "path": first.path,
        "key_id": upload.key_id,
        "status": upload.status,
        "requested_by": upload.requested_by,
        "requested_at": own[0].recorded_at,
        "updated_at": own[-1].recorded_at,
        "fingerprint": upload.fingerprint,
        "upstream_version": upload.upstream_version,
        "reason": upload.reason,
        "detail": upload.detail,
        "receipt": receipt(decoded),
        # What the receipt binds (m8.crypto.receipts): m8ctl checks it is its own.
        "ciphertext_sha256": first.ciphertext_sha256,
    }


def receipt(own: Sequence[DomainEvent]) -> Document | None:
    """The reactor's receipt of the upload's latest outcome, as GET /v1/uploads shows it.

    The latest: after a re-drive a stored outcome follows a failed one. None while pending,
    and for outcomes recorded before reactors signed them.
    """
    outcomes = [
        e for e in own if isinstance(e, SecretStored | SecretUploadRejected | SecretStoreFailed)
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
    """The secret's current state: the value stored last (by outcome, not by request)."""
    decoded = [(event, event.decode(registry)) for event in events]
    requests = {d.upload_id: d for _, d in decoded if isinstance(d, SecretUploadRequested)}
    stored = [(event, d) for event, d in decoded if isinstance(d, SecretStored)]
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


class UploadsProjection:
    name = UPLOADS
    aggregate_type = Secret.aggregate_type

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
        return [upload_document(own) for own in _by_upload(events).values()]


class SecretsProjection:
    name = SECRETS
    aggregate_type = Secret.aggregate_type

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
        return [secret_document(aggregate_id, events)]


class UploadKeysProjection:
    name = UPLOAD_KEYS
    aggregate_type = UploadKey.aggregate_type

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
        key = UploadKey.replay(aggregate_id, (e.decode(registry) for e in events))
        return [{"_id": aggregate_id, "claimed_by": key.claimed_by, "destroyed": key.destroyed}]


# Every read model, for a rebuild. Live, ProjectionRunner keeps rm_upload_keys, and
# SecretReadModels the other two (writing only what an event changed).
PROJECTIONS: tuple[Projection, ...] = (
    UploadsProjection(),
    SecretsProjection(),
    UploadKeysProjection(),
)


class SecretReadModels:
    """Keeps rm_uploads and rm_secrets current: per event, its upload and its secret.

    Idempotent and order-proof like ProjectionRunner: each document is computed from every
    event stored so far and written only over an older state (the version stamp).
    """

    def __init__(self, recorder: MongoEventRecorder) -> None:
        self.recorder = recorder
        self.uploads = recorder.db[UPLOADS]
        self.secrets = recorder.db[SECRETS]

    async def handle(self, event: StoredEvent) -> None:
        """Projects one Secret event; ignores every other."""
        if event.aggregate_type != Secret.aggregate_type:
            return
        events = await self.recorder.load(event.aggregate_type, event.aggregate_id)
        version = events[-1].version
        own = _by_upload(events)[str(event.data["upload_id"])]
        await _write(self.uploads, upload_document(own), version)
        await _write(self.secrets, secret_document(event.aggregate_id, events), version)


async def _write(collection: AsyncCollection[Document], doc: Document, version: int) -> None:
    # The stamp ProjectionRunner uses, so a rebuild and live upkeep mix safely. A duplicate
    # key means a newer state is there already.
    with contextlib.suppress(DuplicateKeyError):
        await collection.replace_one(
            {"_id": doc["_id"], VERSION_FIELD: {"$lte": version}},
            {**doc, VERSION_FIELD: version},
            upsert=True,
        )
