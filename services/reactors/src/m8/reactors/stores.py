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
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError

from m8.crypto import FingerprintKey
from m8.domain import Store
from m8.reactors.adapters import (
    AwsSecretsManagerConfig,
    AwsSecretsManagerStore,
    FingerprintMarks,
    UpstreamStore,
    VaultKvConfig,
    VaultKvStore,
)
from m8.reactors.credentials import AwsCredentials, Credentials, VaultCredentials

log = logging.getLogger(__name__)

STORE_TYPES = ("vault", "aws")
WHERE = "M8_REACTOR_CREDENTIALS_FILE (or M8_REACTOR_CREDENTIALS)"


class StoreConfigError(Exception):
    """m8 cannot build an adapter for a store: its config or credentials are missing or differ."""


@dataclass(frozen=True)
class AdapterLimits:
    """What every adapter of a reactor gets: a timeout per call and its thread pool size."""

    timeout: float = 10.0
    threads: int = 8


@dataclass(frozen=True)
class DevUpstreams:
    """Where a developer's shell points (VAULT_ADDR, VAULT_TOKEN, AWS_ENDPOINT_URL).

    Only with M8_REACTOR_DEV_UNPINNED_STORES is a store with no credentials entry served,
    and only there: a Vault store at exactly `vault_addr` (with `vault_token`), an AWS
    store whose endpoint_url is `aws_endpoint_url`.
    """

    vault_addr: str | None = None
    vault_token: SecretStr | None = None
    aws_endpoint_url: str | None = None


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
        self.dev = dev or DevUpstreams()
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
        if store.store_type not in STORE_TYPES:
            raise StoreConfigError(f"store {store.name!r} has unknown type {store.store_type!r}")
        entry = self.credentials.get(store.name)
        if entry is None:
            return self._unpinned(store, fingerprint_key)
        if not isinstance(entry, _ENTRIES[store.store_type]):
            raise StoreConfigError(
                f"the credentials entry of {store.store_type} store {store.name!r} is not "
                f"a {store.store_type} entry"
            )
        _check_pinned(store, _pinned_config(entry))
        marks = FingerprintMarks(fingerprint_key, in_clear=entry.fingerprint_in_metadata)
        # Built from the entry alone: the catalog has no say beyond choosing the store.
        if isinstance(entry, VaultCredentials):
            return VaultKvStore(self._vault_config(store.name, entry, marks))
        return AwsSecretsManagerStore(self._aws_config(store.name, entry, marks))

    def _vault_config(
        self, name: str, entry: VaultCredentials, marks: FingerprintMarks
    ) -> VaultKvConfig:
        return VaultKvConfig(
            name=name,
            address=entry.address,
            marks=marks,
            mount=entry.mount,
            path_prefix=entry.path_prefix,
            token=entry.token.get_secret_value() if entry.token else None,
            role_id=entry.role_id,
            secret_id=entry.secret_id.get_secret_value() if entry.secret_id else None,
            approle_mount=entry.approle_mount,
            adopt_unmanaged=entry.adopt_unmanaged,
            timeout=self.limits.timeout,
            max_workers=self.limits.threads,
        )

    def _aws_config(
        self, name: str, entry: AwsCredentials, marks: FingerprintMarks
    ) -> AwsSecretsManagerConfig:
        return AwsSecretsManagerConfig(
            name=name,
            region=entry.region,
            marks=marks,
            name_prefix=entry.name_prefix,
            kms_key_id=entry.kms_key_id,
            endpoint_url=entry.endpoint_url,
            adopt_unmanaged=entry.adopt_unmanaged,
            timeout=self.limits.timeout,
            max_workers=self.limits.threads,
        )

    def _unpinned(self, store: Store, fingerprint_key: FingerprintKey) -> UpstreamStore:
        """A store with no entry: refused, unless development allows it (see credentials.py)."""
        if not self.credentials.dev_unpinned_stores:
            raise StoreConfigError(
                f"{store.store_type} store {store.name!r} has no entry in the reactor's "
                f"credentials; a reactor serves only the stores it was given: add one to {WHERE}"
            )
        try:
            entry = self._dev_entry(store)
            marks = FingerprintMarks(fingerprint_key, in_clear=entry.fingerprint_in_metadata)
            log.warning(
                "serving a store that has no credentials entry, as its catalog config says, "
                "because M8_REACTOR_DEV_UNPINNED_STORES is on (development only)",
                extra={"store": store.name},
            )
            if isinstance(entry, VaultCredentials):
                return VaultKvStore(self._vault_config(store.name, entry, marks))
            return AwsSecretsManagerStore(self._aws_config(store.name, entry, marks))
        except ValidationError as exc:
            fields = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
            raise StoreConfigError(
                f"store {store.name!r} has no valid {', '.join(fields)} in its config"
            ) from None

    def _dev_entry(self, store: Store) -> VaultCredentials | AwsCredentials:
        """An entry made from the catalog config, for where the developer's shell points."""
        # Adopting is the reactor's choice, never the catalog's, even in development.
        config = {k: v for k, v in store.config.items() if v is not None}
        config.pop("adopt_unmanaged", None)
        if store.store_type == "vault":
            token, dev_addr = self.dev.vault_token, self.dev.vault_addr
            if token is None or dev_addr is None or not _same(config.get("address"), dev_addr):
                raise StoreConfigError(
                    f"no credentials entry for vault store {store.name!r}, which is not at "
                    f"VAULT_ADDR (or VAULT_TOKEN is unset): add an entry to {WHERE}"
                )
            return VaultCredentials.model_validate({**config, "token": token})
        if not self.dev.aws_endpoint_url or not _same(
            config.get("endpoint_url"), self.dev.aws_endpoint_url
        ):
            raise StoreConfigError(
                f"no credentials entry for aws store {store.name!r}, whose endpoint_url is not "
                f"AWS_ENDPOINT_URL (or that is unset): add an entry to {WHERE}"
            )
        return AwsCredentials.model_validate(config)


_ENTRIES: dict[str, type[VaultCredentials] | type[AwsCredentials]] = {
    "vault": VaultCredentials,
    "aws": AwsCredentials,
}
# Catalog fields that may be absent, and what their absence means.
_ABSENT: dict[str, Any] = {
    "kms_key_id": None,
    "endpoint_url": None,
    "fingerprint_in_metadata": False,
}
_URLS = frozenset({"address", "endpoint_url"})
_MISSING = object()


def _pinned_config(entry: VaultCredentials | AwsCredentials) -> dict[str, Any]:
    """The store config the operator's entry allows, field by field."""
    fields: tuple[str, ...]
    if isinstance(entry, VaultCredentials):
        fields = ("address", "mount", "path_prefix", "fingerprint_in_metadata")
    else:
        fields = ("region", "name_prefix", "endpoint_url", "kms_key_id", "fingerprint_in_metadata")
    return {name: getattr(entry, name) for name in fields}


def _same(url: object, other: object) -> bool:
    """Whether two addresses are one, a trailing slash aside (None and "" are unset)."""
    if not isinstance(url, str | None) or not isinstance(other, str | None):
        return False
    return (url or "").rstrip("/") == (other or "").rstrip("/")


def _check_pinned(store: Store, pinned: dict[str, Any]) -> None:
    """Refuses a store whose catalog config differs in any field from what was pinned.

    The message names the field only: the catalog's value is anyone's who could write
    the catalog (a URL with credentials, say), and it goes into an event.
    """
    for name in sorted(set(pinned) | set(store.config)):
        if name not in pinned:
            # Named only when it looks like a field name: it is the catalog writer's text.
            field = repr(name) if re.fullmatch(r"[a-z_]{1,64}", name) else "a field"
            raise StoreConfigError(
                f"{store.store_type} store {store.name!r} has {field} in the catalog that "
                "the reactor does not know; m8 sends nothing there"
            )
        configured = store.config.get(name, _ABSENT.get(name, _MISSING))
        if name in _ABSENT and configured == "":
            configured = _ABSENT[name]
        same = (
            _same(configured, pinned[name])
            if name in _URLS
            else type(configured) is type(pinned[name]) and configured == pinned[name]
        )
        if not same:
            raise StoreConfigError(
                f"{store.store_type} store {store.name!r} has another {name} in the catalog "
                "than the reactor's credentials pin; m8 sends nothing there until the two agree"
            )
