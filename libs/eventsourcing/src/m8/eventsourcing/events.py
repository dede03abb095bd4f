"""Domain events: immutable, versioned types, and their one stored form."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar


class UnknownEventType(LookupError):
    """A stored event names a type (or version) that no registered class decodes."""


class DomainEvent:
    """Base of every domain event: a frozen dataclass of JSON-compatible fields.

    Subclasses are registered with :meth:`EventRegistry.register`, which sets their
    type name and schema version. A class for an old version stays registered forever;
    it may define ``upcast()`` returning the event as the newer type.
    """

    event_type: ClassVar[str]
    event_version: ClassVar[int]

    def upcast(self) -> DomainEvent:
        """This event in its newest form (itself, unless an old version overrides this)."""
        return self

    def routing_suffix(self) -> str | None:
        """A routing-key suffix that lets consumers bind to a subset (e.g. a store type)."""
        return None

    def on_bus(self) -> bool:
        """Whether the event is published once recorded. Only events that a consumer acts
        on are; the others stay in the event store, where every service can read them."""
        return True


E = TypeVar("E", bound=type[DomainEvent])


class EventRegistry:
    """Maps (type name, version) to the class that decodes it."""

    def __init__(self) -> None:
        self._classes: dict[tuple[str, int], type[DomainEvent]] = {}

    def register(self, name: str, version: int = 1) -> Callable[[E], E]:
        """Class decorator: registers a frozen dataclass as event `name`, schema `version`."""

        def decorate(cls: E) -> E:
            params = getattr(cls, "__dataclass_params__", None)
            if params is None or not params.frozen:
                raise TypeError(f"{cls.__name__} must be a frozen dataclass")
            key = (name, version)
            if key in self._classes:
                raise ValueError(f"event {name} v{version} is registered twice")
            cls.event_type = name
            cls.event_version = version
            self._classes[key] = cls
            return cls

        return decorate

    def decode(self, name: str, version: int, data: Mapping[str, Any]) -> DomainEvent:
        """The event object for stored data, upcast to its newest form."""
        cls = self._classes.get((name, version))
        if cls is None:
            raise UnknownEventType(f"no event class for {name} v{version}")
        event: DomainEvent = cls(**data)
        while (newer := event.upcast()) is not event:
            event = newer
        return event

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._classes


registry = EventRegistry()


def encode(event: DomainEvent) -> dict[str, Any]:
    """The event's fields as a plain dict (its `data`)."""
    return dataclasses.asdict(event)  # type: ignore[call-overload, no-any-return]


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    """`SecretUploadRequested` -> `secret_upload_requested`."""
    return _CAMEL.sub("_", name).lower()


@dataclass(frozen=True)
class Metadata:
    """Who caused an event and in answer to what."""

    actor: str
    correlation_id: str
    causation_id: str | None = None

    def caused_by(self, event: StoredEvent, actor: str | None = None) -> Metadata:
        """Metadata for an event written in reaction to `event`."""
        return Metadata(actor or self.actor, self.correlation_id, event.event_id)


def new_event_id() -> str:
    """A fresh event id in MongoDB's ObjectId form (24 hex digits), made without its driver.

    Seconds since the epoch, then 5 random bytes fixed per process, then a counter: ids
    sort roughly by creation time, and an event store may keep them as ObjectIds.
    """
    global _counter
    with _lock:
        _counter = (_counter + 1) & 0xFFFFFF
        count = _counter
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{_PROCESS_BYTES.hex()}{count:06x}"


_PROCESS_BYTES = secrets.token_bytes(5)
_counter = secrets.randbelow(0x1000000)
_lock = threading.Lock()


def _new_process_bytes() -> None:
    global _PROCESS_BYTES
    _PROCESS_BYTES = secrets.token_bytes(5)


# A forked child is another process: it must not make its parent's ids.
os.register_at_fork(after_in_child=_new_process_bytes)


@dataclass(frozen=True)
class StoredEvent:
    """An event as recorded: the envelope every store and message carries."""

    event_id: str
    aggregate_type: str
    aggregate_id: str
    version: int
    event_type: str
    event_version: int
    data: Mapping[str, Any]
    metadata: Metadata
    recorded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    routing_suffix: str | None = None
    # Whether the outbox publishes it (DomainEvent.on_bus); not part of its message.
    on_bus: bool = field(default=True, compare=False)

    @classmethod
    def new(
        cls,
        aggregate_type: str,
        aggregate_id: str,
        version: int,
        event: DomainEvent,
        metadata: Metadata,
    ) -> StoredEvent:
        """The stored form of a new event at `version` of its aggregate."""
        return cls(
            event_id=new_event_id(),
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=version,
            event_type=event.event_type,
            event_version=event.event_version,
            data=encode(event),
            metadata=metadata,
            # Millisecond precision: what MongoDB keeps, so a round trip is exact.
            recorded_at=_now_ms(),
            routing_suffix=event.routing_suffix(),
            on_bus=event.on_bus(),
        )

    @property
    def routing_key(self) -> str:
        """`<aggregate_type>.<event_type in snake case>[.<suffix>]`."""
        key = f"{self.aggregate_type}.{snake(self.event_type)}"
        return f"{key}.{self.routing_suffix}" if self.routing_suffix else key

    def decode(self, events: EventRegistry = registry) -> DomainEvent:
        """The domain event this record holds."""
        return events.decode(self.event_type, self.event_version, self.data)

    def to_json(self) -> dict[str, Any]:
        """The JSON form used in messages."""
        return {
            "event_id": self.event_id,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "event_type": self.event_type,
            "event_version": self.event_version,
            "data": dict(self.data),
            "metadata": dataclasses.asdict(self.metadata),
            "recorded_at": self.recorded_at.isoformat(),
            "routing_suffix": self.routing_suffix,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> StoredEvent:
        """Parses the JSON form; raises KeyError/TypeError/ValueError on bad input."""
        return cls(
            event_id=str(raw["event_id"]),
            aggregate_type=str(raw["aggregate_type"]),
            aggregate_id=str(raw["aggregate_id"]),
            version=int(raw["version"]),
            event_type=str(raw["event_type"]),
            event_version=int(raw["event_version"]),
            data=dict(raw["data"]),
            metadata=Metadata(**raw["metadata"]),
            recorded_at=datetime.fromisoformat(raw["recorded_at"]),
            routing_suffix=raw.get("routing_suffix"),
        )


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
