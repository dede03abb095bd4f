"""Who may do what on the broker: each service's events, queues and RabbitMQ permissions.

Defined once here and used everywhere: the outbox relay of a service publishes only the
events that service owns (`publishes`), `m8 dev` and the tests give each service a
RabbitMQ user with exactly `permissions(service)`, and deploy/'s RabbitMQ definitions are
generated from `definitions()` (`python -m m8.messaging.permissions`) and checked against
it by a test. So a service whose credentials leak can publish only its own events: the
API cannot record an outcome, a reactor cannot request an upload or record another
type's outcome (RabbitMQ's topic permissions on `m8.events` check each routing key).

RabbitMQ matches permission patterns as unanchored regular expressions, so every pattern
here is anchored. Every process declares every consumer queue at start (see
`declare_topology`), so each service may configure (declare) and bind all of them: a
service could delete or rebind another's queue (denial of service), never publish an
event that is not its own or consume another's queue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from m8.eventsourcing import StoredEvent
from m8.eventsourcing.events import snake
from m8.messaging.topology import (
    API_PROJECTIONS_QUEUE,
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    HANDBACK_EXCHANGE,
    KEYROTATOR_QUEUE,
    RPC_EXCHANGE,
    RPC_KEYROTATOR_QUEUE,
    QueueSpec,
    consumer_queues,
    reactor_queue,
    store_types,
)

API = "api"
KEYROTATOR = "keyrotator"
# The default exchange: RPC replies go through it to the caller's direct reply-to.
DEFAULT_EXCHANGE = "amq.default"


def reactor_service(store_type: str) -> str:
    """The service name of the reactors of one store type (`reactor-vault`)."""
    return f"reactor-{store_type}"


def services() -> tuple[str, ...]:
    """Every m8 service: the API, the key rotator, and the reactors of each store type."""
    return (API, KEYROTATOR, *(reactor_service(t) for t in store_types()))


class UnknownService(ValueError):
    """A service name m8 does not have."""


@dataclass(frozen=True)
class EventKind:
    """Events of some types of one aggregate type; per store type when `store_types`."""

    aggregate_type: str
    event_types: tuple[str, ...]
    # The routing suffixes (store types) these events carry; empty: they carry none.
    store_types: tuple[str, ...] = ()

    def routing_key_pattern(self) -> str:
        """An anchored regular expression of these events' routing keys."""
        types = "|".join(re.escape(snake(t)) for t in self.event_types)
        key = rf"{re.escape(self.aggregate_type)}\.({types})"
        if self.store_types:
            key += rf"\.({'|'.join(re.escape(s) for s in self.store_types)})"
        return f"^{key}$"

    def binding_key_pattern(self) -> str:
        """An anchored regular expression of the binding keys that select only these
        events: their routing keys, with `*` or `#` in place of the store type."""
        types = "|".join(re.escape(snake(t)) for t in self.event_types)
        key = rf"{re.escape(self.aggregate_type)}\.({types})"
        if self.store_types:
            suffixes = [*(re.escape(s) for s in self.store_types), r"\*", r"\#"]
            key += rf"\.({'|'.join(suffixes)})"
        return f"^{key}$"

    def matches(self, event: StoredEvent) -> bool:
        """Whether `event` is of this kind."""
        suffix_ok = (
            event.routing_suffix in self.store_types
            if self.store_types
            else not event.routing_suffix
        )
        return (
            event.aggregate_type == self.aggregate_type
            and event.event_type in self.event_types
            and suffix_ok
        )


def publishes(service: str) -> tuple[EventKind, ...]:
    """The events `service` appends and publishes (the ownership map). Events that go to no
    bus (`DomainEvent.on_bus`: UploadKeyIssued, UploadKeyClaimed) are in no one's map."""
    if service == API:
        return (
            EventKind(
                "secret_store",
                ("StoreRegistered", "StoreActivated", "StoreDeactivated", "DefaultStoreChanged"),
            ),
            EventKind("secret", ("SecretUploadRequested",), store_types()),
        )
    if service == KEYROTATOR:
        return (EventKind("upload_key", ("UploadKeyDestroyed",)),)
    store_type = _store_type(service)
    return (
        EventKind(
            "secret",
            ("SecretStored", "SecretUploadRejected", "SecretUploadSuperseded", "SecretStoreFailed"),
            (store_type,),
        ),
    )


def owner(event: StoredEvent) -> str | None:
    """The service that publishes `event` (None: an event no m8 service appends)."""
    return next((s for s in services() if any(k.matches(event) for k in publishes(s))), None)


@dataclass(frozen=True)
class Permissions:
    """A RabbitMQ user's rights in m8's virtual host (anchored regular expressions)."""

    configure: str
    write: str
    read: str
    # Topic permissions on `m8.events`: which routing keys the user may publish.
    topic_write: str
    # And on `m8.handback`: the names of the queues the user may hand messages back to.
    handback_write: str
    topic_read: str = ".*"

    def topics(self) -> tuple[tuple[str, str], ...]:
        """(exchange, write pattern) of each topic permission."""
        return ((EVENTS_EXCHANGE, self.topic_write), (HANDBACK_EXCHANGE, self.handback_write))


def consumes(service: str) -> tuple[QueueSpec, ...]:
    """The event queues `service` consumes (and so declares, with their dead-letter queues)."""
    if service == API:
        return (API_PROJECTIONS_QUEUE,)
    if service == KEYROTATOR:
        return (KEYROTATOR_QUEUE,)
    return (reactor_queue(_store_type(service)),)


def permissions(service: str) -> Permissions:
    """The rights `service` needs, and no more.

    Declaring its queues needs configure on them; binding, write on the queue and read on
    the exchange; dead-lettering to `m8.dlx`, read on the queue and write on `m8.dlx`.
    Other services' queues it only checks for (a passive declare needs no rights).
    """
    queues = [name for spec in consumes(service) for name in (spec.name, spec.dead_letter_queue)]
    exchanges = [EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE, HANDBACK_EXCHANGE]
    configure = [*exchanges, RPC_EXCHANGE, *queues]
    write = [*queues, *exchanges]
    read = [*queues, *exchanges]
    if service == API:
        write.append(RPC_EXCHANGE)  # requests to the rotator
    elif service == KEYROTATOR:
        configure.append(RPC_KEYROTATOR_QUEUE)
        write += [RPC_KEYROTATOR_QUEUE, DEFAULT_EXCHANGE]
        read += [RPC_KEYROTATOR_QUEUE, RPC_EXCHANGE]
    return Permissions(
        configure=_names(configure),
        write=_names(write),
        read=_names(read),
        topic_write="|".join(kind.routing_key_pattern() for kind in publishes(service)),
        handback_write=_names([spec.name for spec in consumes(service)]),
    )


# Consumers outside m8 (an audit pipeline, a notifier, a deployment waiting for a secret)
# name their queues `consumer.<name>` or `consumer.<name>.<anything>`.
CONSUMER_QUEUE_PREFIX = "consumer."
_CONSUMER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class InvalidConsumerName(ValueError):
    """A consumer name that is not lowercase letters, digits, `-` and `_`."""


def consumable() -> tuple[EventKind, ...]:
    """The events consumers outside m8 may bind to: every event an m8 service publishes
    (docs/asyncapi.yaml describes each)."""
    return tuple(kind for service in services() for kind in publishes(service))


def consumer_queues_pattern(name: str) -> str:
    """An anchored regular expression of the names of consumer `name`'s queues:
    `consumer.<name>` (`consumer_queue`) and any `consumer.<name>.<anything>` an operator
    makes for it."""
    if not _CONSUMER_NAME.match(name):
        raise InvalidConsumerName(
            f"consumer name {name!r}: lowercase letters, digits, '-' and '_' only (at most 63)"
        )
    return rf"^{re.escape(CONSUMER_QUEUE_PREFIX + name)}(\..+)?$"


def consumer_queue(name: str) -> str:
    """The queue the operator makes for consumer `name`: `consumer.<name>`, bound to
    nothing (the consumer binds it). It never refuses a message: a queue that did
    (`x-overflow: reject-publish` when full) would fail m8's own publishing, whose outbox
    would then send the event again and again, so consumers may not declare queues."""
    consumer_queues_pattern(name)  # checks the name
    return CONSUMER_QUEUE_PREFIX + name


def consumer_queue_arguments() -> dict[str, Any]:
    """A consumer queue's arguments: quorum, and never refusing a publish."""
    return {"x-queue-type": "quorum", "x-overflow": "drop-head"}


def consumer_permissions(name: str) -> Permissions:
    """The rights of consumer `name`, a reader outside m8: it binds queues of its own names
    (made by the operator: `consumer_queue`) to `m8.events`, with binding keys that select
    consumable events only (topic read permission: `#` is refused), and reads them. It may
    declare, change or delete nothing (configure), and publish to none of m8's exchanges,
    nor through the default exchange into any queue."""
    own = consumer_queues_pattern(name)
    return Permissions(
        configure="^$",
        write=own,  # binding a queue needs write on it, and publishing to it the exchange's
        read=f"{own}|{_names([EVENTS_EXCHANGE])}",
        topic_write="^$",
        handback_write="^$",
        topic_read="|".join(kind.binding_key_pattern() for kind in consumable()),
    )


def topology(vhost: str) -> dict[str, list[dict[str, Any]]]:
    """m8's exchanges, queues and bindings as RabbitMQ definitions (what
    `declare_topology` and the RPC server declare), so that they exist before any service
    runs, whatever its rights."""
    exchanges = [
        (EVENTS_EXCHANGE, "topic"),
        (RPC_EXCHANGE, "direct"),
        (DEAD_LETTER_EXCHANGE, "direct"),
        (HANDBACK_EXCHANGE, "topic"),
    ]
    queues: list[tuple[str, dict[str, Any]]] = []
    bindings: list[tuple[str, str, str]] = []
    for spec in consumer_queues():
        queues.append((spec.dead_letter_queue, {"x-queue-type": "quorum"}))
        queues.append((spec.name, dict(spec.arguments())))
        bindings.append((DEAD_LETTER_EXCHANGE, spec.dead_letter_queue, spec.name))
        bindings += [(EVENTS_EXCHANGE, spec.name, key) for key in spec.bindings]
        bindings.append((HANDBACK_EXCHANGE, spec.name, spec.name))
    queues.append((RPC_KEYROTATOR_QUEUE, {}))
    bindings.append((RPC_EXCHANGE, RPC_KEYROTATOR_QUEUE, RPC_KEYROTATOR_QUEUE))
    return {
        "exchanges": [
            {
                "name": name,
                "vhost": vhost,
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for name, kind in exchanges
        ],
        "queues": [
            {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": args}
            for name, args in queues
        ],
        "bindings": [
            {
                "source": source,
                "vhost": vhost,
                "destination": queue,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }
            for source, queue, key in bindings
        ],
    }


def definitions(vhost: str = "m8", user_prefix: str = "m8-") -> dict[str, Any]:
    """RabbitMQ definitions for importing: m8's virtual host, its topology, and a user per
    service with that service's permissions.

    Users come without a password hash, so nobody can log in as them until the operator
    sets each one's password (`rabbitmqctl change_password m8-api ...`).
    """
    users, rights, topics = [], [], []
    for service in services():
        user = f"{user_prefix}{service}"
        granted = permissions(service)
        users.append(
            {
                "name": user,
                "password_hash": "",
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
        )
        rights.append(
            {
                "user": user,
                "vhost": vhost,
                "configure": granted.configure,
                "write": granted.write,
                "read": granted.read,
            }
        )
        topics += [
            {
                "user": user,
                "vhost": vhost,
                "exchange": exchange,
                "write": write,
                "read": granted.topic_read,
            }
            for exchange, write in granted.topics()
        ]
    return {
        "vhosts": [{"name": vhost}],
        "users": users,
        "permissions": rights,
        "topic_permissions": topics,
        **topology(vhost),
    }


def _store_type(service: str) -> str:
    store_type = service.removeprefix("reactor-")
    known = services()
    if service not in known or store_type == service:
        raise UnknownService(f"no service {service!r}: one of {', '.join(known)}")
    return store_type


def _names(names: Iterable[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in dict.fromkeys(names)) + ")$"


def main() -> None:
    """Prints deploy/'s RabbitMQ definitions (vhost `m8`, users `m8-<service>`)."""
    print(json.dumps(definitions(), indent=2))


if __name__ == "__main__":
    main()
