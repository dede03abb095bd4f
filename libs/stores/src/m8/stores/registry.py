"""The store types m8 knows: the built-in ones, and any registered before use."""

from __future__ import annotations

from m8.stores.types import StoreType


class UnknownStoreType(LookupError):
    """No store type of that name is registered."""


_TYPES: dict[str, StoreType] = {}


def register(store_type: StoreType) -> StoreType:
    """Adds a store type; ValueError if its name is taken or its descriptor is unsound."""
    known = _TYPES.get(store_type.name)
    if known is not None and known != store_type:
        raise ValueError(f"store type {store_type.name!r} is registered already")
    _check(store_type, [t for t in _TYPES.values() if t.name != store_type.name])
    _TYPES[store_type.name] = store_type
    return store_type


def _check(store_type: StoreType, others: list[StoreType]) -> None:
    """What the reactors' pinning relies on (m8.reactors.stores): every field an admin can
    set in the catalog is pinned by the reactor's own entry, so the catalog only chooses
    among the stores the operator gave a reactor, never where a value goes."""
    config, pinned = set(store_type.config.model_fields), set(store_type.pinned)
    credentials = set(store_type.credentials.model_fields)
    problems = []
    if config != pinned:
        problems.append(f"config fields {sorted(config ^ pinned)} are not exactly the pinned ones")
    if not pinned <= credentials:
        problems.append(f"pinned {sorted(pinned - credentials)} not in its credentials")
    if not set(store_type.addresses) <= pinned:
        problems.append(f"addresses {sorted(set(store_type.addresses) - pinned)} not pinned")
    module, _, function = store_type.adapter.partition(":")
    if not (module and function):
        problems.append(f"adapter {store_type.adapter!r} is not 'module:function'")
    if store_type.entry_field not in credentials:
        problems.append(f"entry field {store_type.entry_field!r} not in its credentials")
    for other in others:
        if store_type.entry_field in other.credentials.model_fields or (
            other.entry_field in credentials
        ):
            problems.append(f"its entries and {other.name!r} entries cannot be told apart")
    if problems:
        raise ValueError(f"store type {store_type.name!r}: {'; '.join(problems)}")


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
