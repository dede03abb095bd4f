"""The API's consumer of `m8.api.projections`: read models and ciphertext redaction, with
one load of each aggregate for both.

Both act only on the event store's copy of an event (`EventRecorder.recorded`): a message
that names an event no service recorded (anyone who can publish to the broker could send
one) is poison, and projects and redacts nothing.

Redaction (SEC1-ENH2) drops the ciphertext of an upload from the event store once nothing
may open it any more: at its final outcome (stored, rejected or superseded: no reactor handles it
again, and the rotator destroys its key), or when the rotator destroyed its key as
expired (an upload that failed, or never settled). Its SHA-256 stays, so the history
still proves what was received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from m8.api.projections import SecretReadModels
from m8.domain import Secret, UploadKey, secret_id
from m8.domain.events import (
    SecretStored,
    SecretUploadRejected,
    SecretUploadRequested,
    SecretUploadSuperseded,
    UploadKeyDestroyed,
)
from m8.eventsourcing import (
    EventRecorder,
    NotRecorded,
    StoredEvent,
    UnknownEventType,
)
from m8.messaging import PoisonMessage
from m8.protocol.status import SETTLED

log = logging.getLogger(__name__)

FINAL = frozenset(
    {
        SecretStored.event_type,
        SecretUploadRejected.event_type,
        SecretUploadSuperseded.event_type,
    }
)


class ReadSide:
    """Projects Secret events and key expiries into the read models and redacts."""

    def __init__(
        self, recorder: EventRecorder, on_settled: Callable[[str], None] = lambda _: None
    ) -> None:
        self.recorder = recorder
        self.read_models = SecretReadModels(recorder)
        # Told the upload id of each document projected with a settled status.
        self.on_settled = on_settled

    async def handle(self, message: StoredEvent) -> None:
        """Handles one message of the queue; ignores what concerns neither; idempotent."""
        if message.aggregate_type == Secret.aggregate_type:
            await self._secret_event(message)
        elif message.event_type == UploadKeyDestroyed.event_type:
            await self._key_destroyed(message)

    async def _recorded(self, message: StoredEvent) -> tuple[StoredEvent, list[StoredEvent]]:
        try:
            return await self.recorder.recorded(message)
        except NotRecorded as exc:
            raise PoisonMessage(str(exc)) from None

    async def _secret_event(self, message: StoredEvent) -> None:
        stored, events = await self._recorded(message)
        upload_id = str(stored.data["upload_id"])
        own = [e for e in events if e.data.get("upload_id") == upload_id]
        # The key only turns a pending upload into an expired one: an upload with an
        # outcome needs no look at it (the common case, at the outcome).
        key: Sequence[StoredEvent] = ()
        if all(e.event_type == SecretUploadRequested.event_type for e in own):
            key = await self.recorder.load(UploadKey.aggregate_type, str(own[0].data["key_id"]))
        await self._project(events, upload_id, key)
        if stored.event_type in FINAL:
            await self._redact(events, upload_id)

    async def _key_destroyed(self, message: StoredEvent) -> None:
        if message.aggregate_type != UploadKey.aggregate_type:
            raise PoisonMessage(f"a {message.aggregate_type} event destroys no upload key")
        stored, key_events = await self._recorded(message)
        try:
            key = UploadKey.replay(stored.aggregate_id, (e.decode() for e in key_events))
        except (UnknownEventType, TypeError, KeyError) as exc:
            raise PoisonMessage(f"the events of {message.aggregate_id!r} do not decode") from exc
        if stored.event_type != UploadKeyDestroyed.event_type or key.destroyed is None:
            raise PoisonMessage(f"key {message.aggregate_id!r} is not destroyed")
        if key.issued is None or key.claimed_by is None:
            return  # never used: no upload, no ciphertext
        events = await self.recorder.load(
            Secret.aggregate_type, secret_id(key.issued.store, key.issued.path)
        )
        await self._project(events, key.claimed_by, key_events)
        await self._redact(events, key.claimed_by)

    async def _project(
        self, events: Sequence[StoredEvent], upload_id: str, key: Sequence[StoredEvent]
    ) -> None:
        document = await self.read_models.project_upload(events, upload_id, key)
        if document is not None and document["status"] in SETTLED:
            self.on_settled(upload_id)

    async def _redact(self, events: Sequence[StoredEvent], upload_id: str) -> None:
        for stored in events:
            if (
                stored.event_type == SecretUploadRequested.event_type
                and stored.data.get("upload_id") == upload_id
                and stored.data.get("ciphertext") is not None
            ):
                await self.recorder.redact(stored.event_id, {"ciphertext": None})
                log.info("ciphertext redacted", extra={"upload_id": upload_id})
