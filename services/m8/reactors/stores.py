"""The adapters a reactor writes through: the catalog's store config plus its own credentials.

The catalog comes from the API and the event store, so it only chooses among the upstreams
the operator pinned in the reactor's credentials (credentials.py): a store whose config
differs from its entry is refused, and so is a store with no entry outside development.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TypeVar

from pydantic import SecretStr

from m8.domain import Store
from m8.reactors.adapters import (
    AwsSecretsManagerConfig,
    AwsSecretsManagerStore,
    UpstreamStore,
    VaultKvConfig,
    VaultKvStore,
)
from m8.reactors.credentials import AwsCredentials, Credentials, VaultCredentials

log = logging.getLogger(__name__)

STORE_TYPES = ("vault", "aws")
WHERE = "M8_REACTOR_CREDENTIALS_FILE (or M8_REACTOR_CREDENTIALS)"

Entry = TypeVar("Entry", VaultCredentials, AwsCredentials)


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

    A store with no credentials entry is served only there: a Vault store at exactly
    `vault_addr` (with `vault_token`), an AWS store whose endpoint_url is `aws_endpoint_url`.
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

    def get(self, store: Store) -> UpstreamStore:
        """The adapter for `store` as the catalog describes it now; StoreConfigError if none."""
        key = (store.name, json.dumps(store.config, sort_keys=True, default=str))
        adapter = self._adapters.get(key)
        if adapter is None:
            adapter = self._adapters[key] = self._build(store)
        return adapter

    async def close(self) -> None:
        """Closes every adapter (their threads and connections)."""
        adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.close()

    def _build(self, store: Store) -> UpstreamStore:
        try:
            if store.store_type == "vault":
                return VaultKvStore(self._vault_config(store))
            if store.store_type == "aws":
                return AwsSecretsManagerStore(self._aws_config(store))
        except KeyError as exc:
            missing = f"store {store.name!r} has no {exc.args[0]!r} in its config"
            raise StoreConfigError(missing) from None
        except ValueError as exc:
            raise StoreConfigError(str(exc)) from None
        raise StoreConfigError(f"store {store.name!r} has unknown type {store.store_type!r}")

    def _vault_config(self, store: Store) -> VaultKvConfig:
        address = str(store.config["address"])
        login = self._entry(store, VaultCredentials)
        token: SecretStr | None
        if login is None:
            token = self._dev_vault_token(store, address)
        else:
            _check_pinned(store, "address", address, login.address)
            token = login.token
        return VaultKvConfig(
            name=store.name,
            address=address,
            mount=str(store.config.get("mount") or "secret"),
            path_prefix=str(store.config.get("path_prefix") or ""),
            token=token.get_secret_value() if token else None,
            role_id=login.role_id if login else None,
            secret_id=login.secret_id.get_secret_value() if login and login.secret_id else None,
            approle_mount=login.approle_mount if login else "approle",
            timeout=self.limits.timeout,
            max_workers=self.limits.threads,
        )

    def _dev_vault_token(self, store: Store, address: str) -> SecretStr:
        """VAULT_TOKEN, for a store with no entry that lives at exactly VAULT_ADDR."""
        token, dev_addr = self.dev.vault_token, self.dev.vault_addr
        if token is None or dev_addr is None or not _same(address, dev_addr):
            raise StoreConfigError(
                f"no credentials for vault store {store.name!r}: add an entry with its "
                f"address to {WHERE} (VAULT_TOKEN serves only the Vault at VAULT_ADDR)"
            )
        log.warning(
            "vault store has no credentials entry; using VAULT_TOKEN, which is meant "
            "for development",
            extra={"store": store.name},
        )
        return token

    def _aws_config(self, store: Store) -> AwsSecretsManagerConfig:
        region = str(store.config["region"])
        endpoint_url = store.config.get("endpoint_url") or None
        pinned = self._entry(store, AwsCredentials)
        if pinned is not None:
            _check_pinned(store, "region", region, pinned.region)
            _check_pinned(store, "endpoint_url", endpoint_url, pinned.endpoint_url)
        elif not _same(endpoint_url, self.dev.aws_endpoint_url):
            raise StoreConfigError(
                f"no credentials entry for aws store {store.name!r}, whose endpoint_url is "
                f"not AWS_ENDPOINT_URL: add an entry with its region and endpoint_url to {WHERE}"
            )
        return AwsSecretsManagerConfig(
            name=store.name,
            region=region,
            name_prefix=str(store.config.get("name_prefix") or ""),
            kms_key_id=store.config.get("kms_key_id") or None,
            endpoint_url=endpoint_url,
            timeout=self.limits.timeout,
            max_workers=self.limits.threads,
        )

    def _entry(self, store: Store, kind: type[Entry]) -> Entry | None:
        """The operator's entry for `store`, which must be of the store's type."""
        entry = self.credentials.get(store.name)
        if entry is None or isinstance(entry, kind):
            return entry
        raise StoreConfigError(
            f"the credentials entry of {store.store_type} store {store.name!r} is not "
            f"a {store.store_type} entry"
        )


def _same(url: str | None, other: str | None) -> bool:
    """Whether two addresses are one, a trailing slash aside (None and "" are unset)."""
    return (url or "").rstrip("/") == (other or "").rstrip("/")


def _check_pinned(store: Store, field: str, configured: str | None, pinned: str | None) -> None:
    """Refuses a store whose catalog config points elsewhere than the operator pinned."""
    if not _same(configured, pinned):
        raise StoreConfigError(
            f"{store.store_type} store {store.name!r} has {field} {configured!r} in the "
            f"catalog, but the reactor's credentials pin {pinned!r}; m8 sends nothing there "
            "until the two agree"
        )
