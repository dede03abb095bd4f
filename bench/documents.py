"""MongoDB documents as m8 writes them for an upload, made with m8's own functions.

`finished_upload` gives every document one stored upload leaves behind (its five events,
already published, the ciphertext redacted; its `rm_uploads`, `rm_secrets` and
`upload_requests` documents, and its path's lease, given back), for seeding history in
bulk (bench.history).
`requested_event` gives the document the API inserts when it records an upload (the
largest event of an upload), for the event-sized writes of MongoDB's ceiling (bench.e2e).
The values are random: sizes and shapes are real, no value is.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from m8.api.handlers import UPLOAD_REQUESTS
from m8.api.projections import SECRETS, UPLOADS, secret_document, upload_document
from m8.crypto import FingerprintKey, fingerprint, format_utc
from m8.domain import Secret, UploadKey, secret_id
from m8.domain.events import (
    SecretStored,
    SecretUploadRequested,
    UploadKeyClaimed,
    UploadKeyDestroyed,
    UploadKeyIssued,
)
from m8.eventsourcing import Metadata, StoredEvent
from m8.eventsourcing.recorder import VERSION_FIELD
from m8.eventstore.mongo import Document, to_document
from m8.reactors.path_leases import COLLECTION as PATH_LEASES
from m8.reactors.path_leases import GIVEN_BACK

CIPHERTEXT_BYTES = 48  # a 32-byte value and its 16-byte tag
KEY_LIFETIME = timedelta(minutes=10)
REQUESTED_BY = "dev-admin"
FINGERPRINT_KEY = FingerprintKey(secrets.token_bytes(32))


def _b64(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def _request(
    upload_id: str, key_id: str, store: str, store_type: str, path: str, ciphertext: bytes | None
) -> SecretUploadRequested:
    return SecretUploadRequested(
        upload_id=upload_id,
        store=store,
        store_type=store_type,
        path=path,
        key_id=key_id,
        client_public_key=_b64(32),
        nonce=_b64(24),
        ciphertext=None if ciphertext is None else base64.b64encode(ciphertext).decode(),
        ciphertext_sha256=hashlib.sha256(ciphertext or secrets.token_bytes(8)).hexdigest(),
        requested_by=REQUESTED_BY,
    )


def requested_event(store: str, store_type: str, aggregate_id: str) -> Document:
    """The event document the API inserts for a new upload, ciphertext and all."""
    ciphertext = secrets.token_bytes(CIPHERTEXT_BYTES)
    request = _request(
        str(uuid.uuid4()), str(uuid.uuid4()), store, store_type, aggregate_id, ciphertext
    )
    metadata = Metadata(REQUESTED_BY, uuid.uuid4().hex)
    return to_document(StoredEvent.new(Secret.aggregate_type, aggregate_id, 1, request, metadata))


def _published(event: StoredEvent) -> Document:
    """The event's document once the outbox published it (if it publishes it at all)."""
    doc = to_document(event)
    return {**doc, "published": True} if "published" in doc else doc


@dataclass(frozen=True)
class FinishedUpload:
    """Every document of one stored upload, by collection."""

    events: list[Document]
    upload: Document  # rm_uploads
    secret: Document  # rm_secrets
    request: Document  # upload_requests
    lease: Document  # reactor_path_leases

    def by_collection(self) -> dict[str, list[Document]]:
        """The documents to insert, by collection."""
        return {
            "events": self.events,
            UPLOADS: [self.upload],
            SECRETS: [self.secret],
            UPLOAD_REQUESTS: [self.request],
            PATH_LEASES: [self.lease],
        }


def finished_upload(store: str, store_type: str, path: str) -> FinishedUpload:
    """One upload to a new secret, stored, its key destroyed and its ciphertext redacted,
    as the API, the rotator and the reactor record it."""
    upload_id, key_id = str(uuid.uuid4()), str(uuid.uuid4())
    aggregate_id = secret_id(store, path)
    asked = Metadata(REQUESTED_BY, uuid.uuid4().hex)
    issued = StoredEvent.new(
        UploadKey.aggregate_type,
        key_id,
        1,
        UploadKeyIssued(
            key_id=key_id,
            store=store,
            store_type=store_type,
            path=path,
            kek_id=f"{store_type}-dev",
            signing_key_id=f"rotator-{uuid.uuid4().hex[:12]}",
            expires_at=format_utc(datetime.now(UTC) + KEY_LIFETIME),
        ),
        Metadata(REQUESTED_BY, asked.correlation_id),
    )
    upload = Metadata(REQUESTED_BY, uuid.uuid4().hex)
    claimed = StoredEvent.new(
        UploadKey.aggregate_type, key_id, 2, UploadKeyClaimed(key_id, upload_id), upload
    )
    # Redacted: what the event store holds once the key is destroyed.
    requested = StoredEvent.new(
        Secret.aggregate_type,
        aggregate_id,
        1,
        _request(upload_id, key_id, store, store_type, path, None),
        upload,
    )
    stored = StoredEvent.new(
        Secret.aggregate_type,
        aggregate_id,
        2,
        SecretStored(
            upload_id=upload_id,
            store=store,
            store_type=store_type,
            path=path,
            upstream_version="1",
            fingerprint=fingerprint(secrets.token_bytes(32), FINGERPRINT_KEY),
            receipt_key_id=f"receipt-{store_type}-dev",
            receipt_signature=_b64(64),
        ),
        upload.caused_by(requested, f"reactor:{store_type}"),
    )
    destroyed = StoredEvent.new(
        UploadKey.aggregate_type,
        key_id,
        3,
        UploadKeyDestroyed(key_id, "used"),
        upload.caused_by(stored, "keyrotator"),
    )
    key, own = [issued, claimed, destroyed], [requested, stored]
    return FinishedUpload(
        events=[_published(e) for e in (*key[:2], *own, key[2])],  # in the order recorded
        # The version stamps SecretReadModels writes: the secret's version, then the key's.
        upload={**upload_document(own, key), VERSION_FIELD: len(own) * 4 + len(key)},
        secret={**secret_document(aggregate_id, own), VERSION_FIELD: len(own)},
        request={
            "_id": upload_id,
            "digest": secrets.token_hex(32),
            "store": store,
            "path": path,
            "key_id": key_id,
            "ciphertext_sha256": requested.data["ciphertext_sha256"],
            "requested_by": REQUESTED_BY,
            "requested_at": requested.recorded_at,
        },
        lease={
            "_id": aggregate_id,
            "holder": upload_id,
            "owner": f"reactor-{store_type}@bench:1",
            "until": GIVEN_BACK,
        },
    )
