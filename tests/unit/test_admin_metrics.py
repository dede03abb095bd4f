"""The relay lag the services export: what a backstop pass left unpublished, by service
(m8_outbox_unpublished_events, m8_outbox_oldest_unpublished_age_seconds)."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from m8.api.metrics import ApiMetrics
from m8.domain.events import StoreRegistered
from m8.eventsourcing import Metadata, StoredEvent
from m8.eventsourcing.memory import InMemoryEventRecorder
from m8.eventstore import OutboxRelay
from m8.eventstore.outbox import Backlog
from m8.reactors.metrics import ReactorMetrics

META = Metadata(actor="admin", correlation_id="corr-metrics")


class Broker:
    """A broker that confirms nothing while `down`."""

    def __init__(self) -> None:
        self.down = True

    async def publish_event(self, event: StoredEvent, timeout: float = 0) -> None:
        if self.down:
            raise ConnectionError("the broker is unreachable")


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("service", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("m8_outbox_")
    }


async def test_events_the_broker_did_not_confirm_show_as_relay_lag_until_published() -> None:
    gc.collect()  # relays of earlier tests (the metrics show every live relay's)
    recorder = InMemoryEventRecorder()
    await recorder.append(
        "secret_store", "catalog", 0, [StoreRegistered("vault-a", "vault", {})], META
    )
    broker = Broker()
    relay = OutboxRelay(recorder, broker, owner="api-1", service="api")  # type: ignore[arg-type]
    metrics = ApiMetrics()

    later = datetime.now(UTC) + timedelta(minutes=2)
    assert await relay.publish_pending(later) == 0
    samples = _samples(metrics.registry)
    assert samples[("m8_outbox_unpublished_events", "api")] == 1
    assert samples[("m8_outbox_oldest_unpublished_age_seconds", "api")] >= 0
    # Every process's registry shows its relays: a reactor's as well.
    assert _samples(ReactorMetrics().registry)[("m8_outbox_unpublished_events", "api")] == 1

    broker.down = False
    assert await relay.publish_pending(later) == 1
    samples = _samples(metrics.registry)
    assert samples[("m8_outbox_unpublished_events", "api")] == 0
    assert samples[("m8_outbox_oldest_unpublished_age_seconds", "api")] == 0


def test_the_age_is_that_of_the_oldest_event_left() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert Backlog("api", 3, now - timedelta(seconds=90)).oldest_age(now) == 90
    assert Backlog("api", 0, None).oldest_age(now) == 0
