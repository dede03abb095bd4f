"""The store catalog's rules (ADR-3 #APID1)."""

from __future__ import annotations

import pytest

from m8.domain import StoreCatalog
from m8.domain.errors import (
    DefaultStoreInUse,
    NoDefaultStore,
    StoreAlreadyRegistered,
    StoreInactive,
    UnknownStore,
)
from m8.domain.events import DefaultStoreChanged, StoreRegistered


def catalog_with(*names: str) -> StoreCatalog:
    catalog = StoreCatalog()
    for name in names:
        catalog.register(name, "vault", {"address": "http://vault:8200"})
    return catalog


def test_first_store_registered_becomes_the_default() -> None:
    catalog = catalog_with("vault-a", "vault-b")
    assert catalog.default == "vault-a"
    assert catalog.target(None).name == "vault-a"
    assert sum(isinstance(e, DefaultStoreChanged) for e in catalog.pending) == 1


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(StoreAlreadyRegistered):
        catalog_with("vault-a", "vault-a")


def test_deactivating_the_default_needs_another_default_first() -> None:
    catalog = catalog_with("vault-a", "vault-b")
    with pytest.raises(DefaultStoreInUse, match="make another store the default first"):
        catalog.deactivate("vault-a")
    catalog.set_default("vault-b")
    catalog.deactivate("vault-a")
    assert not catalog.get("vault-a").active


def test_the_only_store_may_be_deactivated_and_then_takes_no_uploads() -> None:
    catalog = catalog_with("vault-a")
    catalog.deactivate("vault-a")
    with pytest.raises(StoreInactive):
        catalog.target(None)
    catalog.activate("vault-a")
    assert catalog.target(None).name == "vault-a"


def test_an_inactive_store_cannot_become_the_default() -> None:
    catalog = catalog_with("vault-a", "vault-b")
    catalog.deactivate("vault-b")
    with pytest.raises(StoreInactive):
        catalog.set_default("vault-b")


def test_uploads_need_a_known_store_or_a_default() -> None:
    with pytest.raises(NoDefaultStore):
        StoreCatalog().target(None)
    with pytest.raises(UnknownStore):
        catalog_with("vault-a").target("nope")


def test_repeating_a_state_change_records_nothing() -> None:
    catalog = catalog_with("vault-a")
    before = len(catalog.pending)
    catalog.activate("vault-a")
    catalog.set_default("vault-a")
    assert len(catalog.pending) == before


def test_replaying_recorded_events_gives_the_same_catalog() -> None:
    catalog = catalog_with("vault-a", "vault-b")
    catalog.set_default("vault-b")
    catalog.deactivate("vault-a")
    replayed = StoreCatalog.replay("catalog", catalog.pending)
    assert replayed.stores == catalog.stores
    assert replayed.default == "vault-b"
    assert replayed.version == catalog.version


def test_a_second_registration_under_a_known_name_cannot_re_point_the_store() -> None:
    catalog = catalog_with("vault-a")
    forged = StoreRegistered("vault-a", "vault", {"address": "https://collector.example"})
    replayed = StoreCatalog.replay("catalog", [*catalog.pending, forged])
    assert replayed.get("vault-a") == catalog.get("vault-a")
    assert replayed.get("vault-a").config == {"address": "http://vault:8200"}
