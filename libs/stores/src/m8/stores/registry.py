"""The store types m8 knows: the built-in ones, and any registered before use."""

from __future__ import annotations

from m8.stores.types import StoreType


class UnknownStoreType(LookupError):
    """No store type of that name is registered."""


_TYPES: dict[str, StoreType] = {}


def register(store_type: StoreType) -> StoreType:
    """Adds a store type; ValueError if its name is taken by another one."""
    known = _TYPES.get(store_type.name)
    if known is not None and known != store_type:
        raise ValueError(f"store type {store_type.name!r} is registered already")
    _TYPES[store_type.name] = store_type
    return store_type


def unregister(name: str) -> None:
    """Removes a store type (for tests that register one of their own)."""
    _TYPES.pop(name, None)


def get(name: str) -> StoreType:
    """The store type called `name`, or UnknownStoreType."""
    try:
        return _TYPES[name]
    except KeyError:
        raise UnknownStoreType(f"unknown store type {name!r}; m8 knows {names()}") from None


def names() -> tuple[str, ...]:
    """The names of every registered store type, in registration order."""
    return tuple(_TYPES)


def all_types() -> tuple[StoreType, ...]:
    """Every registered store type, in registration order."""
    return tuple(_TYPES.values())
