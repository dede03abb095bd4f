"""What a consumer outside m8 sees: one event of every kind m8 publishes, sent the way m8
sends it (each owning service's outbox relay, on its own broker user), and broker users
of the consumer kind (m8.messaging.permissions.consumer_permissions)."""

from __future__ import annotations

import asyncio
import functools
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from m8.domain.events import (
    DefaultStoreChanged,
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
    SecretUploadSuperseded,
    StoreActivated,
    StoreDeactivated,
    StoreRegistered,
    UploadKeyClaimed,
    UploadKeyDestroyed,
    UploadKeyIssued,
)
from m8.eventsourcing import DomainEvent, Metadata
from m8.eventstore import MongoEventRecorder, OutboxRelay
from m8.messaging import Broker as AmqpBroker
from m8.messaging.permissions import consumes, services
from m8.messaging.topology import store_types
from m8.messaging.users import grant_consumer
from tests.servers import Broker
from tests.support.events import eventually

METADATA = Metadata(actor="alice", correlation_id="corr-consumers")
CIPHERTEXT = "c2VhbGVkIGJ5IHRoZSB0ZXN0"  # must never reach a consumer


def secret_events(store: str, store_type: str, path: str) -> list[DomainEvent]:
    """The history of uploads to one path: a request and each outcome, signed as reactors
    sign them (shape only: consumers do not verify)."""
    common = {"store": store, "store_type": store_type, "path": path}
    receipt = {"receipt_key_id": "receipt-1", "receipt_signature": "c2ln"}
    return [
        SecretUploadRequested(
            upload_id="u-1",
            **common,
            key_id="k-1",
            client_public_key="Y3Br",
            nonce="bm9uY2U=",
            ciphertext=CIPHERTEXT,
            ciphertext_sha256="0" * 64,
            requested_by="alice",
        ),
        SecretStored(
            upload_id="u-1", **common, upstream_version="1", fingerprint="fp1:x", **receipt
        ),
        SecretUploadRejected(upload_id="u-2", **common, reason="bad_mac", detail="d", **receipt),
        SecretUploadSuperseded(upload_id="u-3", **common, superseded_by="u-1", **receipt),
        SecretStoreFailed(
            upload_id="u-4", **common, reason="upstream_unavailable", detail="d", **receipt
        ),
    ]


def every_event() -> list[tuple[str, str, list[DomainEvent]]]:
    """(aggregate type, aggregate id, events) covering every event class m8 has, for every
    store type; those that go to no bus included (they must not reach a consumer)."""
    histories: list[tuple[str, str, list[DomainEvent]]] = [
        (
            "secret_store",
            "catalog",
            [
                StoreRegistered("vault-a", "vault", {"address": "http://vault:8200"}),
                StoreActivated("vault-a"),
                DefaultStoreChanged("vault-a", None),
                StoreDeactivated("vault-a"),
            ],
        ),
        (
            "upload_key",
            "k-1",
            [
                UploadKeyIssued("k-1", "vault-a", "vault", "team/db", "kek", "sk", "2030-01-01"),
                UploadKeyClaimed("k-1", "u-1"),
                UploadKeyDestroyed("k-1", "expired"),
            ],
        ),
    ]
    for store_type in store_types():
        store = f"{store_type}-a"
        histories.append(
            ("secret", f"{store}:team/db", secret_events(store, store_type, "team/db"))
        )
    return histories


async def publish_as_m8(broker: Broker, recorder: MongoEventRecorder) -> int:
    """Records `every_event()` and runs each service's outbox relay, on its own user, until
    every event that goes to the bus is published; returns how many were."""
    for aggregate_type, aggregate_id, events in every_event():
        await recorder.append(aggregate_type, aggregate_id, 0, events, METADATA)
    expected = await recorder.events.count_documents({"published": False})
    for service in services():
        connection = await AmqpBroker.connect(
            broker.service_url(service), service, consumes(service)
        )
        relay = OutboxRelay(
            recorder,
            connection,
            owner=f"test-{service}",
            service=service,
            grace=0.0,
            backstop_interval=0.1,
        )
        task = asyncio.create_task(relay.run())
        try:
            await eventually(functools.partial(_owned_published, recorder, relay), timeout=60)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await connection.close()
    assert await recorder.events.count_documents({"published": False}) == 0
    return expected


async def _owned_published(recorder: MongoEventRecorder, relay: OutboxRelay) -> bool:
    kinds = relay.kinds or ()
    left = await recorder.unpublished(1000)
    return not any(any(k.matches(e) for k in kinds) for e in left)


def consumer_url(broker: Broker, name: str) -> str:
    """Makes consumer `name`'s broker user in the test's virtual host (deleted with it),
    as `python -m m8.messaging.users consumer NAME` does; returns its AMQP URL."""
    user, password = f"{broker.name}-consumer-{name}", secrets.token_hex(16)
    with httpx.Client(base_url=f"{broker.management_url}/api", auth=broker.auth, timeout=30) as api:
        grant_consumer(api, broker.name, user, password, name)
    parts = urlsplit(broker.url)
    netloc = f"{quote(user, safe='')}:{password}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc))
