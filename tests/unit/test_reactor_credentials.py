"""Upstream credentials come from a private file or the environment, pin each store as a
whole, and never leak."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from m8.reactors.credentials import Credentials, load_credentials
from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError
from m8.stores.adapters import NotManagedByM8
from m8.stores.aws import AwsCredentials
from m8.stores.vault import VaultCredentials

TOKEN = "hvs.not-to-be-seen"
ADDRESS = "https://vault.example:8200"
VAULT = {"address": ADDRESS, "mount": "secret", "path_prefix": "m8/"}
AWS = {"region": "eu-west-1", "name_prefix": "m8/"}


def _file(tmp_path: Path, content: object, mode: int = 0o600) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(content))
    os.chmod(path, mode)
    return path


def test_credentials_file_pins_each_store_and_gives_vault_a_token_or_an_approle(
    tmp_path: Path,
) -> None:
    path = _file(
        tmp_path,
        {
            "prod": {**VAULT, "token": TOKEN},
            "dr": {**VAULT, "role_id": "r", "secret_id": "s", "approle_mount": "m"},
            "cloud": {**AWS, "kms_key_id": "alias/m8"},
            "local": {
                **AWS,
                "endpoint_url": "http://127.0.0.1:5000",
                "fingerprint_in_metadata": True,
            },
        },
    )
    found = load_credentials(ReactorSettings(reactor_credentials_file=path))
    prod, dr = found.get("prod"), found.get("dr")
    assert isinstance(prod, VaultCredentials)
    assert isinstance(dr, VaultCredentials)
    assert (prod.address, prod.mount, prod.path_prefix) == (ADDRESS, "secret", "m8/")
    assert not prod.fingerprint_in_metadata
    assert prod.token is not None
    assert prod.token.get_secret_value() == TOKEN
    assert (dr.role_id, dr.approle_mount) == ("r", "m")
    assert found.get("cloud") == AwsCredentials(
        region="eu-west-1", name_prefix="m8/", kms_key_id="alias/m8"
    )
    assert found.get("local") == AwsCredentials(
        region="eu-west-1",
        name_prefix="m8/",
        endpoint_url="http://127.0.0.1:5000",
        fingerprint_in_metadata=True,
    )
    assert not found.dev_unpinned_stores
    assert TOKEN not in repr(found)


def test_credentials_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, {"prod": {**VAULT, "token": TOKEN}}, mode=0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_credentials(ReactorSettings(reactor_credentials_file=path))


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M8_REACTOR_CREDENTIALS", json.dumps({"prod": {**VAULT, "token": TOKEN}}))
    settings = ReactorSettings()
    assert TOKEN not in repr(settings)
    assert set(load_credentials(settings).stores) == {"prod"}


def test_no_credentials_at_all_is_allowed_and_then_no_store_is_served() -> None:
    assert load_credentials(ReactorSettings()) == Credentials()


def test_serving_stores_without_an_entry_is_off_unless_set_and_then_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert not load_credentials(ReactorSettings()).dev_unpinned_stores
    monkeypatch.setenv("M8_REACTOR_DEV_UNPINNED_STORES", "true")
    with caplog.at_level(logging.WARNING, logger="m8.reactors"):
        assert load_credentials(ReactorSettings()).dev_unpinned_stores
    assert "development only" in caplog.text


@pytest.mark.parametrize(
    ("entry", "missing"),
    [
        ({"address": ADDRESS, "path_prefix": "m8/", "token": TOKEN}, "mount"),
        ({"address": ADDRESS, "mount": "secret", "token": TOKEN}, "path_prefix"),
        ({"region": "eu-west-1"}, "name_prefix"),
    ],
)
def test_entry_that_leaves_where_values_land_to_the_catalog_is_refused(
    entry: dict[str, object], missing: str
) -> None:
    settings = ReactorSettings(reactor_credentials=SecretStr(json.dumps({"prod": entry})))
    with pytest.raises(ConfigurationError, match=f"prod.*{missing}") as refused:
        load_credentials(settings)
    assert TOKEN not in str(refused.value)


def test_both_sources_at_once_are_refused(tmp_path: Path) -> None:
    settings = ReactorSettings(
        reactor_credentials_file=_file(tmp_path, {}),
        reactor_credentials=SecretStr("{}"),
    )
    with pytest.raises(ConfigurationError, match="not both"):
        load_credentials(settings)


@pytest.mark.parametrize(
    "entry",
    [
        {**VAULT, "token": TOKEN, "role_id": "r", "secret_id": TOKEN},
        {**VAULT, "role_id": "r"},
        {**VAULT, "token": [TOKEN]},
        {**VAULT, "token": TOKEN, "password": TOKEN},
        {**AWS, "token": TOKEN},
    ],
)
def test_invalid_entry_is_refused_without_showing_its_secrets(entry: dict[str, object]) -> None:
    settings = ReactorSettings(reactor_credentials=SecretStr(json.dumps({"prod": entry})))
    with pytest.raises(ConfigurationError, match="prod") as refused:
        load_credentials(settings)
    assert TOKEN not in str(refused.value)


def test_credentials_that_are_not_json_are_refused_without_showing_them() -> None:
    settings = ReactorSettings(reactor_credentials=SecretStr(f"token={TOKEN}"))
    with pytest.raises(ConfigurationError, match="M8_REACTOR_CREDENTIALS") as refused:
        load_credentials(settings)
    assert TOKEN not in str(refused.value)


def test_entry_that_pins_no_address_is_refused_and_says_what_it_needs() -> None:
    settings = ReactorSettings(
        reactor_credentials=SecretStr(json.dumps({"prod": {"mount": "kv", "token": TOKEN}}))
    )
    given = "prod: give a vault store's 'address' or an aws store's 'region'"
    with pytest.raises(ConfigurationError, match=given) as refused:
        load_credentials(settings)
    assert TOKEN not in str(refused.value)


def test_an_entry_may_let_the_reactor_adopt_secrets_m8_does_not_manage(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        {
            "prod": {**VAULT, "token": TOKEN, "adopt_unmanaged": True},
            "cloud": {**AWS, "adopt_unmanaged": True},
            "other": {**AWS},
        },
    )

    found = load_credentials(ReactorSettings(reactor_credentials_file=path))

    prod, cloud, other = found.get("prod"), found.get("cloud"), found.get("other")
    assert prod is not None
    assert cloud is not None
    assert other is not None
    assert (prod.adopt_unmanaged, cloud.adopt_unmanaged, other.adopt_unmanaged) == (
        True,
        True,
        False,
    )


def test_the_refusal_to_overwrite_an_unmanaged_secret_says_where_to_allow_it_in_full() -> None:
    refused = NotManagedByM8(store="vault store 'prod'", path="team/db")

    # The detail is what the event and GET /v1/uploads show: the advice must fit whole.
    assert not refused.detail.endswith("...")
    assert '"adopt_unmanaged": true' in refused.detail
    assert "M8_REACTOR_CREDENTIALS_FILE" in refused.detail
