"""Drops an upload's ciphertext from the event store once its key is destroyed (SEC1-ENH2).

By then the ciphertext cannot be opened by anyone; removing it means no copy of it
outlives its key in our own store either. Its SHA-256 stays, so the history still proves
what was received.
"""

from __future__ import annotations

import logging

from m8.domain import Secret, UploadKey, secret_id
from m8.domain.events import SecretUploadRequested, UploadKeyDestroyed
from m8.eventsourcing import (
    EventRecorder,
    NotRecorded,
    StoredEvent,
    UnknownEventType,
)
from m8.messaging import PoisonMessage

log = logging.getLogger(__name__)


class CiphertextRedactor:
    """Redacts the SecretUploadRequested of the upload that claimed a destroyed key."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder

    async def handle(self, message: StoredEvent) -> None:
        """Acts on UploadKeyDestroyed, ignores everything else; idempotent.

        Only on a destruction the event store holds: a forged message (anyone who can
        publish to the broker could send one) is poison and redacts nothing.
        """
        if message.event_type != UploadKeyDestroyed.event_type:
            return
        if message.aggregate_type != UploadKey.aggregate_type:
            raise PoisonMessage(f"a {message.aggregate_type} event destroys no upload key")
        try:
            stored, events = await self.recorder.recorded(message)
            key = UploadKey.replay(stored.aggregate_id, (e.decode() for e in events))
        except NotRecorded as exc:
            raise PoisonMessage(str(exc)) from None
        except (UnknownEventType, TypeError, KeyError) as exc:
            raise PoisonMessage(f"the events of {message.aggregate_id!r} do not decode") from exc
        if stored.event_type != UploadKeyDestroyed.event_type or key.destroyed is None:
            raise PoisonMessage(f"key {message.aggregate_id!r} is not destroyed")
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
