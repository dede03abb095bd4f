"""The catalog of upstream stores (ADR-3 #APID1): one aggregate, so its rules hold.

Names are unique, the first store registered becomes the default, and the default is
never left pointing at an inactive store while an active one could take its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from m8.domain.errors import (
    DefaultStoreInUse,
    NoDefaultStore,
    StoreAlreadyRegistered,
    StoreInactive,
    UnknownStore,
)
from m8.domain.events import (
    DefaultStoreChanged,
    StoreActivated,
    StoreDeactivated,
    StoreRegistered,
)
from m8.eventsourcing import Aggregate, DomainEvent

CATALOG_ID = "catalog"


@dataclass(frozen=True)
class Store:
    """One upstream store as m8 knows it."""

    name: str
    store_type: str
    config: dict[str, Any] = field(default_factory=dict)
    active: bool = True


class StoreCatalog(Aggregate):
    """Every registered store, which are active, and which is the default."""

    aggregate_type: ClassVar[str] = "secret_store"

    def __init__(self, aggregate_id: str = CATALOG_ID) -> None:
        super().__init__(aggregate_id)
        self.stores: dict[str, Store] = {}
        self.default: str | None = None

    def apply(self, event: DomainEvent) -> None:
        match event:
            case StoreRegistered(name=name, store_type=store_type, config=config):
                # The first registration holds: `register` never records a second one, so
                # one in the history is forged, and must not re-point the store.
                if name not in self.stores:
                    self.stores[name] = Store(name, store_type, dict(config), active=False)
            case StoreActivated(name=name):
                self.stores[name] = replace(self.stores[name], active=True)
            case StoreDeactivated(name=name):
                self.stores[name] = replace(self.stores[name], active=False)
            case DefaultStoreChanged(name=name):
                self.default = name

    def get(self, name: str) -> Store:
        """The store called `name`, or UnknownStore."""
        store = self.stores.get(name)
        if store is None:
            raise UnknownStore(f"there is no store named {name!r}; see GET /v1/stores")
        return store

    def register(self, name: str, store_type: str, config: dict[str, Any]) -> None:
        """Adds an active store; the first one also becomes the default."""
        if name in self.stores:
            raise StoreAlreadyRegistered(f"a store named {name!r} exists already")
        self._record(StoreRegistered(name, store_type, dict(config)))
        self._record(StoreActivated(name))
        if self.default is None:
            self._record(DefaultStoreChanged(name, None))

    def activate(self, name: str) -> None:
        """Lets uploads target `name` again (no change if active)."""
        if not self.get(name).active:
            self._record(StoreActivated(name))

    def deactivate(self, name: str) -> None:
        """Refuses new uploads to `name`; the default only goes once another is chosen."""
        store = self.get(name)
        if not store.active:
            return
        others = [s.name for s in self.stores.values() if s.active and s.name != name]
        if name == self.default and others:
            raise DefaultStoreInUse(
                f"{name!r} is the default store; make another store the default first "
                f"(active: {', '.join(sorted(others))})"
            )
        self._record(StoreDeactivated(name))

    def set_default(self, name: str) -> None:
        """Makes `name` (which must be active) the default store."""
        if not self.get(name).active:
            raise StoreInactive(f"store {name!r} is inactive; activate it first")
        if self.default != name:
            self._record(DefaultStoreChanged(name, self.default))

    def target(self, name: str | None) -> Store:
        """The store an upload goes to: `name`, or the default; it must be active."""
        if name is None:
            if self.default is None:
                raise NoDefaultStore("no store is registered yet; an admin must add one")
            name = self.default
        store = self.get(name)
        if not store.active:
            raise StoreInactive(f"store {name!r} is inactive and takes no uploads")
        return store
