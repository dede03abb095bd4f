"""Adapters are built only for stores the operator pinned, exactly as pinned."""

from __future__ import annotations

from typing import Any

import pytest

from m8.crypto import FingerprintKey
from m8.domain import Store
from m8.reactors.credentials import Credentials
from m8.reactors.stores import DevUpstreams, StoreAdapters, StoreConfigError
from m8.stores.adapters import AdapterLimits
from m8.stores.adapters.aws import AwsSecretsManagerStore
from m8.stores.adapters.vault import VaultKvStore
from m8.stores.aws import AwsCredentials
from m8.stores.vault import VaultCredentials

ADDRESS = "http://vault:8200"
VAULT_CONFIG = {"address": ADDRESS, "mount": "kv", "path_prefix": "apps/"}
AWS_CONFIG = {"region": "eu-west-1", "name_prefix": "m8/", "kms_key_id": None}
VAULT = Store("prod", "vault", {**VAULT_CONFIG, "fingerprint_in_metadata": False})
AWS = Store("cloud", "aws", {**AWS_CONFIG, "endpoint_url": None, "fingerprint_in_metadata": False})
MOTO = "http://moto:5000"
FOREIGN_KEY = "arn:aws:kms:eu-west-1:999999999999:key/0000-1111"
KEY = FingerprintKey.generate()


def adapters(
    dev: DevUpstreams | None = None, *, dev_unpinned: bool = False, **entries: dict[str, Any]
) -> StoreAdapters:
    pinned: dict[str, VaultCredentials | AwsCredentials] = {
        name: VaultCredentials(**entry) if "address" in entry else AwsCredentials(**entry)
        for name, entry in entries.items()
    }
    credentials = Credentials(pinned, dev_unpinned_stores=dev_unpinned)
    return StoreAdapters(credentials, AdapterLimits(timeout=3, threads=2), dev)


def moved(store: Store, **config: Any) -> Store:
    return Store(store.name, store.store_type, {**store.config, **config})


async def test_vault_store_is_built_from_its_entry_and_logs_in_with_its_own_approle() -> None:
    built = adapters(prod={**VAULT_CONFIG, "role_id": "r", "secret_id": "s", "approle_mount": "m8"})
    adapter = built.get(VAULT, KEY)
    assert isinstance(adapter, VaultKvStore)
    config = adapter.config
    assert (config.address, config.mount, config.path_prefix) == (ADDRESS, "kv", "apps/")
    assert (config.role_id, config.secret_id, config.approle_mount) == ("r", "s", "m8")
    assert (config.timeout, config.max_workers) == (3, 2)
    assert not config.marks.in_clear
    await built.close()


async def test_store_written_by_the_api_before_the_setting_existed_is_still_served() -> None:
    built = adapters(prod={**VAULT_CONFIG, "token": "t"})
    old = Store("prod", "vault", dict(VAULT_CONFIG))  # no fingerprint_in_metadata at all
    assert isinstance(built.get(old, KEY), VaultKvStore)
    await built.close()


@pytest.mark.parametrize(
    ("field", "catalog"),
    [
        ("address", "https://collector.example"),
        ("mount", "secret"),
        ("path_prefix", ""),  # wider: the whole mount
        ("path_prefix", "apps/other/"),
        ("fingerprint_in_metadata", True),
    ],
)
def test_vault_store_differing_from_its_entry_in_any_field_gets_no_adapter(
    field: str, catalog: object
) -> None:
    built = adapters(prod={**VAULT_CONFIG, "token": "t"})
    with pytest.raises(StoreConfigError, match=f"another {field} in the catalog"):
        built.get(moved(VAULT, **{field: catalog}), KEY)


@pytest.mark.parametrize(
    ("field", "catalog"),
    [
        ("region", "us-east-1"),
        ("endpoint_url", "https://collector.example"),
        ("name_prefix", ""),
        ("name_prefix", "m8"),  # "m8" + path reaches "m8-other/..." too
        ("kms_key_id", FOREIGN_KEY),
        ("fingerprint_in_metadata", True),
    ],
)
def test_aws_store_differing_from_its_entry_in_any_field_gets_no_adapter(
    field: str, catalog: object
) -> None:
    built = adapters(cloud=AWS_CONFIG)
    with pytest.raises(StoreConfigError, match=f"another {field} in the catalog"):
        built.get(moved(AWS, **{field: catalog}), KEY)


def test_aws_store_without_the_pinned_kms_key_gets_no_adapter() -> None:
    built = adapters(cloud={**AWS_CONFIG, "kms_key_id": "alias/m8"})
    with pytest.raises(StoreConfigError, match="another kms_key_id"):
        built.get(AWS, KEY)


async def test_aws_store_is_built_from_its_entry() -> None:
    entry = {**AWS_CONFIG, "kms_key_id": "alias/m8", "fingerprint_in_metadata": True}
    built = adapters(cloud=entry)
    adapter = built.get(moved(AWS, kms_key_id="alias/m8", fingerprint_in_metadata=True), KEY)
    assert isinstance(adapter, AwsSecretsManagerStore)
    config = adapter.config
    assert (config.region, config.name_prefix, config.kms_key_id) == (
        "eu-west-1",
        "m8/",
        "alias/m8",
    )
    assert config.endpoint_url is None
    assert config.marks.in_clear
    await built.close()


def test_catalog_field_the_reactor_does_not_know_gets_no_adapter() -> None:
    built = adapters(prod={**VAULT_CONFIG, "token": "t"})
    with pytest.raises(StoreConfigError, match="'adopt_unmanaged' in the catalog"):
        built.get(moved(VAULT, adopt_unmanaged=True), KEY)
    with pytest.raises(StoreConfigError, match="has a field in the catalog") as refused:
        built.get(moved(VAULT, **{"https://u:hunter2@x": True}), KEY)
    assert "hunter2" not in str(refused.value)


def test_refusal_names_the_field_but_never_the_catalogs_value() -> None:
    built = adapters(prod={**VAULT_CONFIG, "token": "t"})
    rogue = "https://user:hunter2@collector.example"
    with pytest.raises(StoreConfigError) as refused:
        built.get(moved(VAULT, address=rogue), KEY)
    assert "hunter2" not in str(refused.value)
    assert "address" in str(refused.value)


@pytest.mark.parametrize(
    "store",
    [VAULT, AWS, moved(AWS, endpoint_url=MOTO)],
    ids=["vault", "aws", "aws-at-aws-endpoint-url"],
)
def test_store_without_an_entry_is_refused_even_where_the_shell_points(store: Store) -> None:
    dev = {"VAULT_ADDR": ADDRESS, "VAULT_TOKEN": "root", "AWS_ENDPOINT_URL": MOTO}
    with pytest.raises(StoreConfigError, match="a reactor serves only the stores it was given"):
        adapters(dev).get(store, KEY)


async def test_development_setting_serves_a_vault_store_without_an_entry_only_at_vault_addr() -> (
    None
):
    dev = {"VAULT_ADDR": ADDRESS + "/", "VAULT_TOKEN": "dev-root"}
    built = adapters(dev, dev_unpinned=True)
    adapter = built.get(VAULT, KEY)
    assert isinstance(adapter, VaultKvStore)
    assert (adapter.config.token, adapter.config.mount) == ("dev-root", "kv")
    with pytest.raises(StoreConfigError, match="address is not VAULT_ADDR"):
        built.get(moved(VAULT, address="https://collector.example"), KEY)
    await built.close()


async def test_development_setting_serves_an_aws_store_only_at_aws_endpoint_url() -> None:
    local = moved(AWS, endpoint_url=MOTO)
    with pytest.raises(StoreConfigError, match="not AWS_ENDPOINT_URL"):
        adapters(dev_unpinned=True).get(AWS, KEY)  # AWS itself, with ambient keys: never
    with pytest.raises(StoreConfigError, match="not AWS_ENDPOINT_URL"):
        adapters(dev_unpinned=True).get(local, KEY)
    built = adapters({"AWS_ENDPOINT_URL": MOTO}, dev_unpinned=True)
    adapter = built.get(local, KEY)
    assert isinstance(adapter, AwsSecretsManagerStore)
    assert adapter.config.endpoint_url == MOTO
    await built.close()


async def test_adopting_unmanaged_secrets_is_set_in_the_reactors_credentials_entry() -> None:
    built = adapters(
        prod={**VAULT_CONFIG, "token": "t", "adopt_unmanaged": True},
        cloud={**AWS_CONFIG, "adopt_unmanaged": True},
        other={**VAULT_CONFIG, "token": "t"},
    )
    vault, aws = built.get(VAULT, KEY), built.get(AWS, KEY)
    default = built.get(Store("other", "vault", VAULT.config), KEY)

    assert isinstance(vault, VaultKvStore)
    assert isinstance(aws, AwsSecretsManagerStore)
    assert isinstance(default, VaultKvStore)
    assert (vault.config.adopt_unmanaged, aws.config.adopt_unmanaged) == (True, True)
    assert not default.config.adopt_unmanaged
    await built.close()


async def test_a_store_without_an_entry_never_adopts_whatever_its_catalog_config_says() -> None:
    dev = {"VAULT_ADDR": ADDRESS, "VAULT_TOKEN": "dev-root"}
    built = adapters(dev, dev_unpinned=True)
    adapter = built.get(moved(VAULT, adopt_unmanaged=True), KEY)

    assert isinstance(adapter, VaultKvStore)
    assert not adapter.config.adopt_unmanaged
    await built.close()


def test_entry_made_for_another_store_type_is_a_config_error() -> None:
    with pytest.raises(StoreConfigError, match="is not a vault entry"):
        adapters(prod=AWS_CONFIG).get(VAULT, KEY)


def test_store_config_missing_a_field_is_a_config_error() -> None:
    broken = Store("cloud", "aws", {"name_prefix": "m8/"})
    with pytest.raises(StoreConfigError, match="another region"):
        adapters(cloud=AWS_CONFIG).get(broken, KEY)


async def test_one_store_gets_one_adapter() -> None:
    built = adapters(prod={**VAULT_CONFIG, "token": "t"})
    assert built.get(VAULT, KEY) is built.get(VAULT, KEY)
    await built.close()
