"""The adapters a reactor writes through: the catalog's store config plus its own credentials."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pydantic import SecretStr

from m8.domain import Store
from m8.reactors.adapters import (
    AwsSecretsManagerConfig,
    AwsSecretsManagerStore,
    UpstreamStore,
    VaultKvConfig,
    VaultKvStore,
)
from m8.reactors.credentials import Credentials

log = logging.getLogger(__name__)

STORE_TYPES = ("vault", "aws")


class StoreConfigError(Exception):
    """m8 cannot build an adapter for a store: its config or credentials are missing."""


@dataclass(frozen=True)
class AdapterLimits:
    """What every adapter of a reactor gets: a timeout per call and its thread pool size."""

    timeout: float = 10.0
    threads: int = 8


class StoreAdapters:
    """One adapter per store, built on first use and kept (with its threads) until close."""

    def __init__(
        self,
        credentials: Credentials,
        limits: AdapterLimits,
        fallback_vault_token: SecretStr | None = None,
    ) -> None:
        self.credentials = credentials
        self.limits = limits
        self.fallback_vault_token = fallback_vault_token
        self._adapters: dict[tuple[str, str], UpstreamStore] = {}

    def get(self, store: Store) -> UpstreamStore:
        """The adapter for `store` as the catalog describes it now."""
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
        config = store.config
        try:
            if store.store_type == "vault":
                return VaultKvStore(self._vault_config(store))
            if store.store_type == "aws":
                return AwsSecretsManagerStore(
                    AwsSecretsManagerConfig(
                        name=store.name,
                        region=str(config["region"]),
                        name_prefix=str(config.get("name_prefix") or ""),
                        kms_key_id=config.get("kms_key_id") or None,
                        endpoint_url=config.get("endpoint_url") or None,
                        timeout=self.limits.timeout,
                        max_workers=self.limits.threads,
                    )
                )
        except KeyError as exc:
            missing = f"store {store.name!r} has no {exc.args[0]!r} in its config"
            raise StoreConfigError(missing) from None
        except ValueError as exc:
            raise StoreConfigError(str(exc)) from None
        raise StoreConfigError(f"store {store.name!r} has unknown type {store.store_type!r}")

    def _vault_config(self, store: Store) -> VaultKvConfig:
        login = self.credentials.get(store.name)
        token = login.token if login else self.fallback_vault_token
        if login is None:
            if token is None:
                raise StoreConfigError(
                    f"no credentials for vault store {store.name!r}: add an entry to "
                    "M8_REACTOR_CREDENTIALS_FILE (or M8_REACTOR_CREDENTIALS)"
                )
            log.warning(
                "vault store has no credentials entry; using VAULT_TOKEN, which is meant "
                "for development",
                extra={"store": store.name},
            )
        return VaultKvConfig(
            name=store.name,
            address=str(store.config["address"]),
            mount=str(store.config.get("mount") or "secret"),
            path_prefix=str(store.config.get("path_prefix") or ""),
            token=token.get_secret_value() if token else None,
            role_id=login.role_id if login else None,
            secret_id=login.secret_id.get_secret_value() if login and login.secret_id else None,
            approle_mount=login.approle_mount if login else "approle",
            timeout=self.limits.timeout,
            max_workers=self.limits.threads,
        )
