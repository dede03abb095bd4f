"""What m8 relies on from OpenBao / Vault KV v2, shown against the real server."""

from __future__ import annotations

import hvac
import pytest
from hvac.exceptions import InvalidRequest

from tests.servers import Vault


@pytest.fixture
def kv(vault: Vault) -> hvac.api.secrets_engines.KvV2:
    client = hvac.Client(url=vault.addr, token=vault.token)
    assert client.is_authenticated()
    return client.secrets.kv.v2


def test_kv_v2_write_then_read_gives_the_value_and_version(
    kv: hvac.api.secrets_engines.KvV2, vault: Vault
) -> None:
    path = vault.prefix + "db/password"
    written = kv.create_or_update_secret(path, secret={"value": "s3cr3t"}, mount_point="secret")
    read = kv.read_secret_version(path, mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"value": "s3cr3t"}
    assert read["data"]["metadata"]["version"] == written["data"]["version"] == 1


def test_check_and_set_refuses_a_stale_version(
    kv: hvac.api.secrets_engines.KvV2, vault: Vault
) -> None:
    path = vault.prefix + "api/key"
    kv.create_or_update_secret(path, secret={"value": "one"}, cas=0, mount_point="secret")
    with pytest.raises(InvalidRequest, match="check-and-set"):
        kv.create_or_update_secret(path, secret={"value": "two"}, cas=0, mount_point="secret")
    kv.create_or_update_secret(path, secret={"value": "two"}, cas=1, mount_point="secret")
    meta = kv.read_secret_metadata(path, mount_point="secret")
    assert meta["data"]["current_version"] == 2


def test_custom_metadata_is_kept_beside_the_secret(
    kv: hvac.api.secrets_engines.KvV2, vault: Vault
) -> None:
    path = vault.prefix + "tagged"
    kv.create_or_update_secret(path, secret={"value": "v"}, mount_point="secret")
    kv.update_metadata(
        path, custom_metadata={"m8_upload_id": "u-1", "managed-by": "m8"}, mount_point="secret"
    )
    meta = kv.read_secret_metadata(path, mount_point="secret")
    assert meta["data"]["custom_metadata"] == {"m8_upload_id": "u-1", "managed-by": "m8"}
