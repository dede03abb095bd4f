"""Adapters are built from the catalog's store config plus the reactor's own credentials."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from m8.domain import Store
from m8.reactors.adapters import AwsSecretsManagerStore, VaultKvStore
from m8.reactors.credentials import VaultCredentials
from m8.reactors.stores import AdapterLimits, StoreAdapters, StoreConfigError

VAULT = Store("prod", "vault", {"address": "http://vault:8200", "path_prefix": "apps/"})
AWS = Store("cloud", "aws", {"region": "eu-west-1", "name_prefix": "m8/", "kms_key_id": None})


def adapters(fallback: str | None = None, **credentials: Any) -> StoreAdapters:
    return StoreAdapters(
        {name: VaultCredentials(**entry) for name, entry in credentials.items()},
        AdapterLimits(timeout=3, threads=2),
        fallback_vault_token=SecretStr(fallback) if fallback else None,
    )


async def test_vault_store_logs_in_with_its_own_approle() -> None:
    built = adapters(prod={"role_id": "r", "secret_id": "s", "approle_mount": "m8"})
    adapter = built.get(VAULT)
    assert isinstance(adapter, VaultKvStore)
    config = adapter.config
    assert (config.address, config.mount, config.path_prefix) == (
        "http://vault:8200",
        "secret",
        "apps/",
    )
    assert (config.role_id, config.secret_id, config.approle_mount) == ("r", "s", "m8")
    assert (config.timeout, config.max_workers) == (3, 2)
    await built.close()


async def test_vault_store_without_an_entry_falls_back_to_vault_token() -> None:
    built = adapters(fallback="dev-root")
    adapter = built.get(VAULT)
    assert isinstance(adapter, VaultKvStore)
    assert adapter.config.token == "dev-root"
    await built.close()


def test_vault_store_without_any_credentials_is_a_config_error() -> None:
    with pytest.raises(StoreConfigError, match="no credentials for vault store 'prod'"):
        adapters().get(VAULT)


async def test_aws_store_uses_its_region_and_prefix() -> None:
    built = adapters()
    adapter = built.get(AWS)
    assert isinstance(adapter, AwsSecretsManagerStore)
    assert (adapter.config.region, adapter.config.name_prefix) == ("eu-west-1", "m8/")
    assert adapter.config.kms_key_id is None
    await built.close()


def test_store_config_missing_a_field_is_a_config_error() -> None:
    broken = Store("cloud", "aws", {"name_prefix": "m8/"})
    with pytest.raises(StoreConfigError, match="'region'"):
        adapters().get(broken)


async def test_one_store_gets_one_adapter() -> None:
    built = adapters(prod={"token": "t"})
    assert built.get(VAULT) is built.get(VAULT)
    await built.close()
