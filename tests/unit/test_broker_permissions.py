"""The ownership map and the broker rights, defined once in m8.messaging.permissions."""

from __future__ import annotations

import inspect
import json
import re
from itertools import combinations
from pathlib import Path

import m8.domain.events
from m8.domain.events import UploadKeyClaimed, UploadKeyDestroyed, UploadKeyIssued
from m8.eventsourcing import DomainEvent
from m8.messaging.permissions import definitions, permissions, publishes, services

DEFINITIONS = Path(__file__).parents[2] / "deploy" / "rabbitmq" / "definitions.json"


def _domain_event_types() -> set[str]:
    return {
        cls.event_type
        for _, cls in inspect.getmembers(m8.domain.events, inspect.isclass)
        if issubclass(cls, DomainEvent) and hasattr(cls, "event_type")
    }


# Recorded for the event store's readers only: nothing consumes them from the bus.
OFF_THE_BUS = {UploadKeyIssued.event_type, UploadKeyClaimed.event_type}


def test_events_that_no_consumer_acts_on_stay_off_the_bus() -> None:
    issued = UploadKeyIssued(
        key_id="k", store="s", store_type="vault", path="p", kek_id="kek", signing_key_id="sk",
        expires_at="2026-01-01T00:00:00.000Z",
    )  # fmt: skip
    assert not issued.on_bus()
    assert not UploadKeyClaimed(key_id="k", upload_id="u").on_bus()
    # After a final outcome the API has redacted and projected it; an expiry it must see.
    assert not UploadKeyDestroyed(key_id="k", reason="used").on_bus()
    assert not UploadKeyDestroyed(key_id="k", reason="rejected").on_bus()
    assert UploadKeyDestroyed(key_id="k", reason="expired").on_bus()


def test_every_domain_event_on_the_bus_is_published_by_exactly_one_service() -> None:
    # (event type, store type): the reactors of each store type publish their own outcomes.
    owned = {
        service: {
            (event_type, store_type)
            for kind in publishes(service)
            for event_type in kind.event_types
            for store_type in kind.store_types or (None,)
        }
        for service in services()
    }
    assert {t for pairs in owned.values() for t, _ in pairs} == _domain_event_types() - OFF_THE_BUS
    for first, second in combinations(services(), 2):
        assert not owned[first] & owned[second], (first, second)


def test_a_services_topic_rights_match_the_routing_keys_of_its_events_only() -> None:
    api, reactor = permissions("api").topic_write, permissions("reactor-vault").topic_write
    assert re.fullmatch(api, "secret.secret_upload_requested.aws")
    assert re.fullmatch(api, "secret_store.store_registered")
    assert not re.search(api, "secret.secret_stored.vault")
    assert not re.search(api, "xsecret_store.store_registeredx")  # anchored
    assert re.fullmatch(reactor, "secret.secret_stored.vault")
    assert not re.search(reactor, "secret.secret_stored.aws")
    assert not re.search(reactor, "secret.secret_upload_requested.vault")


def test_deploys_rabbitmq_definitions_are_the_permissions_in_code() -> None:
    # Regenerate with: python -m m8.messaging.permissions > deploy/rabbitmq/definitions.json
    assert json.loads(DEFINITIONS.read_text()) == definitions()
