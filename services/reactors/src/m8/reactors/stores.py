"""The adapters a reactor writes through: built from its own credentials entries.

The catalog comes from the API and the event store, so it only chooses among the stores
the operator pinned in the reactor's credentials (credentials.py): a store whose config
differs from its entry in any field is refused, and so is a store with no entry, unless
M8_REACTOR_DEV_UNPINNED_STORES (development only) lets the developer's shell decide.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from pydantic import ValidationError

from m8 import stores
from m8.crypto import FingerprintKey
from m8.domain import Store
from m8.reactors.credentials import Credentials
from m8.stores import StoreCredentials, StoreType, UnknownStoreType
from m8.stores.adapters import AdapterLimits, FingerprintMarks, UpstreamStore, adapter_factory

log = logging.getLogger(__name__)

WHERE = "M8_REACTOR_CREDENTIALS_FILE (or M8_REACTOR_CREDENTIALS)"
# Where a developer's shell points each store type's local server, by variable
# (VAULT_ADDR, VAULT_TOKEN, AWS_ENDPOINT_URL: each type's DevServer names its own).
DevUpstreams = Mapping[str, str]


class StoreConfigError(Exception):
    """m8 cannot build an adapter for a store: its config or credentials are missing or differ."""


class StoreAdapters:
    """One adapter per store, built on first use and kept (with its threads) until close."""

    def __init__(
        self,
        credentials: Credentials,
        limits: AdapterLimits,
        dev: DevUpstreams | None = None,
    ) -> None:
        self.credentials = credentials
        self.limits = limits
        self.dev = dev or {}
        self._adapters: dict[tuple[str, str], UpstreamStore] = {}

    def get(self, store: Store, fingerprint_key: FingerprintKey) -> UpstreamStore:
        """The adapter for `store` as the catalog describes it now; StoreConfigError if none.

        `fingerprint_key` seals the fingerprints the adapter writes upstream (marks.py).
        """
        key = (store.name, json.dumps(store.config, sort_keys=True, default=str))
        adapter = self._adapters.get(key)
        if adapter is None:
            adapter = self._adapters[key] = self._build(store, fingerprint_key)
        return adapter

    async def close(self) -> None:
        """Closes every adapter (their threads and connections)."""
        adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.close()

    def _build(self, store: Store, fingerprint_key: FingerprintKey) -> UpstreamStore:
        try:
            store_type = stores.get(store.store_type)
        except UnknownStoreType:
            raise StoreConfigError(
                f"store {store.name!r} has unknown type {store.store_type!r}"
            ) from None
        entry = self.credentials.get(store.name)
        if entry is None:
            entry = self._unpinned(store, store_type)
        elif type(entry) is not store_type.credentials:
            raise StoreConfigError(
                f"the credentials entry of {store.store_type} store {store.name!r} is not "
                f"a {store.store_type} entry"
            )
        else:
            _check_pinned(store, store_type, entry)
        marks = FingerprintMarks(fingerprint_key, in_clear=entry.fingerprint_in_metadata)
        # Built from the entry alone: the catalog has no say beyond choosing the store.
        return adapter_factory(store_type)(store.name, entry, marks, self.limits)

    def _unpinned(self, store: Store, store_type: StoreType) -> StoreCredentials:
        """A store with no entry: refused, unless development allows it (see credentials.py)."""
        if not self.credentials.dev_unpinned_stores:
            raise StoreConfigError(
                f"{store.store_type} store {store.name!r} has no entry in the reactor's "
                f"credentials; a reactor serves only the stores it was given: add one to {WHERE}"
            )
        try:
            entry = self._dev_entry(store, store_type)
        except ValidationError as exc:
            fields = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
            raise StoreConfigError(
                f"store {store.name!r} has no valid {', '.join(fields)} in its config"
            ) from None
        log.warning(
            "serving a store that has no credentials entry, as its catalog config says, "
            "because M8_REACTOR_DEV_UNPINNED_STORES is on (development only)",
            extra={"store": store.name},
        )
        return entry

    def _dev_entry(self, store: Store, store_type: StoreType) -> StoreCredentials:
        """An entry made from the catalog config, for where the developer's shell points."""
        missing = f"no credentials entry for {store.store_type} store {store.name!r}"
        dev = store_type.dev
        if dev is None:
            raise StoreConfigError(
                f"{missing}, and {store.store_type} stores have no local server: "
                f"add an entry to {WHERE}"
            )
        # Adopting is the reactor's choice, never the catalog's, even in development.
        config = {k: v for k, v in store.config.items() if v is not None}
        config.pop("adopt_unmanaged", None)
        variables = [v for v in (dev.address_variable, dev.login_variable) if v]
        address = self.dev.get(dev.address_variable)
        secret = self.dev.get(dev.login_variable) if dev.login_variable else None
        unset = not address or (dev.login_variable is not None and secret is None)
        if unset or not _same(config.get(dev.address_field), address):
            raise StoreConfigError(
                f"{missing}, whose {dev.address_field} is not {dev.address_variable} (or "
                f"{' or '.join(variables)} is unset): add an entry to {WHERE}"
            )
        if dev.login_field is not None:
            config[dev.login_field] = secret
        return store_type.credentials.model_validate(config)


_MISSING = object()


def _same(url: object, other: object) -> bool:
    """Whether two addresses are one, a trailing slash aside (None and "" are unset)."""
    if not isinstance(url, str | None) or not isinstance(other, str | None):
        return False
    return (url or "").rstrip("/") == (other or "").rstrip("/")


def _check_pinned(store: Store, store_type: StoreType, entry: StoreCredentials) -> None:
    """Refuses a store whose catalog config differs in any field from what was pinned.

    The message names the field only: the catalog's value is anyone's who could write
    the catalog (a URL with credentials, say), and it goes into an event.
    """
    pinned = {name: getattr(entry, name) for name in store_type.pinned}
    # A field the catalog may leave out means its default (and so does "" for it).
    absent = {
        name: field.default
        for name, field in store_type.config.model_fields.items()
        if not field.is_required()
    }
    for name in sorted(set(pinned) | set(store.config)):
        if name not in pinned:
            # Named only when it looks like a field name: it is the catalog writer's text.
            field = repr(name) if re.fullmatch(r"[a-z_]{1,64}", name) else "a field"
            raise StoreConfigError(
                f"{store.store_type} store {store.name!r} has {field} in the catalog that "
                "the reactor does not know; m8 sends nothing there"
            )
        configured = store.config.get(name, absent.get(name, _MISSING))
        if name in absent and configured == "":
            configured = absent[name]
        same = (
            _same(configured, pinned[name])
            if name in store_type.addresses
            else type(configured) is type(pinned[name]) and configured == pinned[name]
        )
        if not same:
            raise StoreConfigError(
                f"{store.store_type} store {store.name!r} has another {name} in the catalog "
                "than the reactor's credentials pin; m8 sends nothing there until the two agree"
            )
