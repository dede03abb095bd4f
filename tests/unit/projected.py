"""The API's read models as its projections consumer writes them, on the in-memory recorder."""

from __future__ import annotations

from m8.api.projections import SECRETS, UPLOADS, SecretReadModels
from m8.eventsourcing import DomainEvent, Metadata, Record, StoredEvent
from m8.eventsourcing.memory import InMemoryEventRecorder
from m8.eventsourcing.recorder import VERSION_FIELD

METADATA = Metadata(actor="test", correlation_id="c")


class Projected:
    """Events appended one at a time and handed to `SecretReadModels`, as published."""

    def __init__(self) -> None:
        self.recorder = InMemoryEventRecorder()
        self.read_models = SecretReadModels(self.recorder)

    async def record(
        self, aggregate_type: str, aggregate_id: str, *events: DomainEvent
    ) -> list[StoredEvent]:
        """Appends `events` to the aggregate and projects each; the stored events."""
        stored: list[StoredEvent] = []
        for event in events:
            version = len(await self.recorder.load(aggregate_type, aggregate_id))
            [one] = await self.recorder.append(
                aggregate_type, aggregate_id, version, [event], METADATA
            )
            await self.read_models.handle(one)
            stored.append(one)
        return stored

    def documents(self, name: str) -> dict[str, Record]:
        """Read model `name` by id, without the version stamp."""
        return {
            key: {k: v for k, v in doc.items() if k != VERSION_FIELD}
            for key, doc in self.recorder.read_models.get(name, {}).items()
        }

    def uploads(self) -> dict[str, Record]:
        return self.documents(UPLOADS)

    def secret(self, aggregate_id: str) -> Record:
        return self.documents(SECRETS)[aggregate_id]
