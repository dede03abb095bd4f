"""Upstream credentials come from a private file or the environment, and never leak."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from m8.reactors.credentials import load_credentials
from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError

TOKEN = "hvs.not-to-be-seen"


def _file(tmp_path: Path, content: object, mode: int = 0o600) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(content))
    os.chmod(path, mode)
    return path


def test_credentials_file_gives_a_token_or_an_approle_per_store(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        {"prod": {"token": TOKEN}, "dr": {"role_id": "r", "secret_id": "s", "approle_mount": "m"}},
    )
    found = load_credentials(ReactorSettings(reactor_credentials_file=path))
    assert found["prod"].token is not None
    assert found["prod"].token.get_secret_value() == TOKEN
    assert (found["dr"].role_id, found["dr"].approle_mount) == ("r", "m")
    assert TOKEN not in repr(found)


def test_credentials_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, {"prod": {"token": TOKEN}}, mode=0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_credentials(ReactorSettings(reactor_credentials_file=path))


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M8_REACTOR_CREDENTIALS", json.dumps({"prod": {"token": TOKEN}}))
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
        {"token": TOKEN, "role_id": "r", "secret_id": TOKEN},
        {"role_id": "r"},
        {"token": [TOKEN]},
        {"token": TOKEN, "password": TOKEN},
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
