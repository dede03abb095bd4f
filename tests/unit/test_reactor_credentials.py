"""Upstream credentials come from a private file or the environment, pin where each store
lives, and never leak."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from m8.reactors.credentials import AwsCredentials, VaultCredentials, load_credentials
from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError

TOKEN = "hvs.not-to-be-seen"
ADDRESS = "https://vault.example:8200"


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
            "prod": {"address": ADDRESS, "token": TOKEN},
            "dr": {"address": ADDRESS, "role_id": "r", "secret_id": "s", "approle_mount": "m"},
            "cloud": {"region": "eu-west-1"},
            "local": {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:5000"},
        },
    )
    found = load_credentials(ReactorSettings(reactor_credentials_file=path))
    prod, dr = found["prod"], found["dr"]
    assert isinstance(prod, VaultCredentials)
    assert isinstance(dr, VaultCredentials)
    assert prod.address == ADDRESS
    assert prod.token is not None
    assert prod.token.get_secret_value() == TOKEN
    assert (dr.role_id, dr.approle_mount) == ("r", "m")
    assert found["cloud"] == AwsCredentials(region="eu-west-1")
    assert found["local"] == AwsCredentials(
        region="us-east-1", endpoint_url="http://127.0.0.1:5000"
    )
    assert TOKEN not in repr(found)


def test_credentials_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, {"prod": {"address": ADDRESS, "token": TOKEN}}, mode=0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_credentials(ReactorSettings(reactor_credentials_file=path))


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "M8_REACTOR_CREDENTIALS", json.dumps({"prod": {"address": ADDRESS, "token": TOKEN}})
    )
    settings = ReactorSettings()
    assert TOKEN not in repr(settings)
    assert set(load_credentials(settings)) == {"prod"}


def test_no_credentials_at_all_is_allowed() -> None:
    assert load_credentials(ReactorSettings()) == {}


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
        {"address": ADDRESS, "token": TOKEN, "role_id": "r", "secret_id": TOKEN},
        {"address": ADDRESS, "role_id": "r"},
        {"address": ADDRESS, "token": [TOKEN]},
        {"address": ADDRESS, "token": TOKEN, "password": TOKEN},
        {"region": "eu-west-1", "token": TOKEN},
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
        reactor_credentials=SecretStr(json.dumps({"prod": {"token": TOKEN}}))
    )
    with pytest.raises(ConfigurationError, match="prod: give a Vault store's 'address'") as refused:
        load_credentials(settings)
    assert TOKEN not in str(refused.value)
