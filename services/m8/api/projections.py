"""The API's read models, each a pure function of one aggregate's events.

- `rm_uploads`: one document per upload (by upload id): status, outcome, who and when.
- `rm_secrets`: one document per secret (store and path): its current fingerprint and
  the history of its uploads. Never a value or a ciphertext.
- `rm_upload_keys`: how each upload key ended, which tells an expired upload apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from m8.domain import Secret, UploadKey
from m8.domain.events import SecretStored
from m8.eventsourcing import StoredEvent, registry
from m8.eventstore import Projection
from m8.eventstore.mongo import Document

UPLOADS = "rm_uploads"
SECRETS = "rm_secrets"
UPLOAD_KEYS = "rm_upload_keys"


def _upload_documents(aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
    """Every upload of one secret, in the order they were requested."""
    secret = Secret.replay(aggregate_id, (e.decode(registry) for e in events))
    requested_at: dict[str, datetime] = {}
    updated_at: dict[str, datetime] = {}
    for event in events:
        upload_id = str(event.data["upload_id"])
        requested_at.setdefault(upload_id, event.recorded_at)
        updated_at[upload_id] = event.recorded_at
    first = events[0].data
    return [
        {
            "_id": upload.upload_id,
            "store": first["store"],
            "path": first["path"],
            "key_id": upload.key_id,
            "status": upload.status,
            "requested_by": upload.requested_by,
            "requested_at": requested_at[upload.upload_id],
            "updated_at": updated_at[upload.upload_id],
            "fingerprint": upload.fingerprint,
            "upstream_version": upload.upstream_version,
            "reason": upload.reason,
            "detail": upload.detail,
        }
        for upload in secret.uploads.values()
    ]


class UploadsProjection:
    name = UPLOADS
    aggregate_type = Secret.aggregate_type

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
        return _upload_documents(aggregate_id, events)


class SecretsProjection:
    name = SECRETS
    aggregate_type = Secret.aggregate_type

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
        uploads = _upload_documents(aggregate_id, events)
        # The current value is the one stored last (by outcome, not by request).
        current: dict[str, Any] | None = None
        for event in events:
            if event.event_type == SecretStored.event_type:
                current = next(u for u in uploads if u["_id"] == event.data["upload_id"])
        history = [
            {
                "upload_id": u["_id"],
                "status": u["status"],
                "fingerprint": u["fingerprint"],
                "upstream_version": u["upstream_version"],
                "requested_by": u["requested_by"],
                "requested_at": u["requested_at"],
                "completed_at": u["updated_at"] if u["status"] != "pending" else None,
            }
            for u in uploads
        ]
        first = events[0].data
        return [
            {
                "_id": aggregate_id,
                "store": first["store"],
                "path": first["path"],
                "fingerprint": current["fingerprint"] if current else None,
                "upstream_version": current["upstream_version"] if current else None,
                "stored_at": current["updated_at"] if current else None,
                "stored_by": current["requested_by"] if current else None,
                "updated_at": events[-1].recorded_at,
                "history": history,
            }
        ]


class UploadKeysProjection:
    name = UPLOAD_KEYS
    aggregate_type = UploadKey.aggregate_type

    def project(self, aggregate_id: str, events: Sequence[StoredEvent]) -> list[Document]:
        key = UploadKey.replay(aggregate_id, (e.decode(registry) for e in events))
        return [{"_id": aggregate_id, "claimed_by": key.claimed_by, "destroyed": key.destroyed}]


PROJECTIONS: tuple[Projection, ...] = (
    UploadsProjection(),
    SecretsProjection(),
    UploadKeysProjection(),
)
