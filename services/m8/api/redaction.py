"""Drops an upload's ciphertext from the event store once its key is destroyed (SEC1-ENH2).

By then the ciphertext cannot be opened by anyone; removing it means no copy of it
outlives its key in our own store either. Its SHA-256 stays, so the history still proves
what was received.
"""

from __future__ import annotations

import logging

from m8.domain import Secret, UploadKey, secret_id
from m8.domain.events import SecretUploadRequested, UploadKeyDestroyed
from m8.eventsourcing import StoredEvent
from m8.eventstore import MongoEventRecorder, Repository

log = logging.getLogger(__name__)


class CiphertextRedactor:
    """Redacts the SecretUploadRequested of the upload that claimed a destroyed key."""

    def __init__(self, recorder: MongoEventRecorder, repository: Repository) -> None:
        self.recorder = recorder
        self.repository = repository

    async def handle(self, event: StoredEvent) -> None:
        """Acts on UploadKeyDestroyed, ignores everything else; idempotent."""
        if event.event_type != UploadKeyDestroyed.event_type:
            return
        key = await self.repository.load(UploadKey, event.aggregate_id)
        if key.issued is None or key.claimed_by is None:
            return  # never used: no upload carries a ciphertext for it
        for stored in await self.recorder.load(
            Secret.aggregate_type, secret_id(key.issued.store, key.issued.path)
        ):
            if (
                stored.event_type == SecretUploadRequested.event_type
                and stored.data.get("upload_id") == key.claimed_by
                and stored.data.get("ciphertext") is not None
            ):
                await self.recorder.redact(stored.event_id, {"ciphertext": None})
                log.info(
                    "ciphertext redacted",
                    extra={"upload_id": key.claimed_by, "key_id": key.id},
                )
