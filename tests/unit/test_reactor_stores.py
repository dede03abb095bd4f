"""Adapters are built from the catalog's store config, only where the operator pinned it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from m8.domain import Store
from m8.reactors.adapters import AwsSecretsManagerStore, VaultKvStore
from m8.reactors.credentials import AwsCredentials, Credentials, VaultCredentials
from m8.reactors.stores import AdapterLimits, DevUpstreams, StoreAdapters, StoreConfigError

ADDRESS = "http://vault:8200"
VAULT = Store("prod", "vault", {"address": ADDRESS, "path_prefix": "apps/"})
AWS = Store("cloud", "aws", {"region": "eu-west-1", "name_prefix": "m8/", "kms_key_id": None})
MOTO = "http://moto:5000"


def adapters(dev: DevUpstreams | None = None, **entries: dict[str, Any]) -> StoreAdapters:
    credentials: Credentials = {
        name: VaultCredentials(**entry) if "address" in entry else AwsCredentials(**entry)
        for name, entry in entries.items()
    }
    return StoreAdapters(credentials, AdapterLimits(timeout=3, threads=2), dev)


def moved(store: Store, **config: Any) -> Store:
    return Store(store.name, store.store_type, {**store.config, **config})


async def test_vault_store_logs_in_with_its_own_approle() -> None:
    built = adapters(
        prod={"address": ADDRESS, "role_id": "r", "secret_id": "s", "approle_mount": "m8"}
    )
    adapter = built.get(VAULT)
    assert isinstance(adapter, VaultKvStore)
    config = adapter.config
    assert (config.address, config.mount, config.path_prefix) == (ADDRESS, "secret", "apps/")
    assert (config.role_id, config.secret_id, config.approle_mount) == ("r", "s", "m8")
    assert (config.timeout, config.max_workers) == (3, 2)
    await built.close()


def test_vault_store_moved_away_from_its_pinned_address_gets_no_adapter() -> None:
    built = adapters(prod={"address": ADDRESS, "token": "t"})
    with pytest.raises(StoreConfigError, match="credentials pin 'http://vault:8200'"):
        built.get(moved(VAULT, address="https://collector.example"))


async def test_vault_store_without_an_entry_uses_vault_token_only_at_vault_addr() -> None:
    built = adapters(DevUpstreams(vault_addr=ADDRESS + "/", vault_token=SecretStr("dev-root")))
    adapter = built.get(VAULT)
    assert isinstance(adapter, VaultKvStore)
    assert adapter.config.token == "dev-root"
    with pytest.raises(StoreConfigError, match="VAULT_TOKEN serves only the Vault at VAULT_ADDR"):
        built.get(moved(VAULT, address="https://collector.example"))
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


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"region": "us-east-1"}, "region"),
        ({"endpoint_url": "https://collector.example"}, "endpoint_url"),
    ],
)
def test_aws_store_moved_away_from_its_pinned_region_or_endpoint_gets_no_adapter(
    config: dict[str, str], field: str
) -> None:
    built = adapters(cloud={"region": "eu-west-1"})
    with pytest.raises(StoreConfigError, match=f"has {field} .* but the reactor's credentials pin"):
        built.get(moved(AWS, **config))


async def test_aws_store_without_an_entry_is_served_only_at_aws_endpoint_url() -> None:
    local = moved(AWS, endpoint_url=MOTO)
    with pytest.raises(StoreConfigError, match="not AWS_ENDPOINT_URL"):
        adapters().get(local)
    built = adapters(DevUpstreams(aws_endpoint_url=MOTO))
    adapter = built.get(local)
    assert isinstance(adapter, AwsSecretsManagerStore)
    assert adapter.config.endpoint_url == MOTO
    await built.close()


def test_entry_made_for_another_store_type_is_a_config_error() -> None:
    with pytest.raises(StoreConfigError, match="is not a vault entry"):
        adapters(prod={"region": "eu-west-1"}).get(VAULT)


def test_store_config_missing_a_field_is_a_config_error() -> None:
    broken = Store("cloud", "aws", {"name_prefix": "m8/"})
    with pytest.raises(StoreConfigError, match="'region'"):
        adapters().get(broken)


async def test_one_store_gets_one_adapter() -> None:
    built = adapters(prod={"address": ADDRESS, "token": "t"})
    assert built.get(VAULT) is built.get(VAULT)
    await built.close()
