"""The rotator's settings read the way an operator writes them in the environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from m8.config import SettingsError, load_settings
from m8.keyrotator import KeyRotatorSettings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("900", timedelta(minutes=15)),
        ("0.5", timedelta(seconds=0.5)),
        ("PT15M", timedelta(minutes=15)),
    ],
)
def test_durations_are_seconds_or_iso_8601(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: timedelta
) -> None:
    monkeypatch.setenv("M8_KEYROTATOR_UPLOAD_KEY_LIFETIME", text)

    assert KeyRotatorSettings().keyrotator_upload_key_lifetime == expected


def test_kek_files_are_a_json_mapping_of_store_type_to_files_oldest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "M8_KEYROTATOR_KEK_FILES", '{"vault": ["/k/v-1.pub.json", "/k/v-2.pub.json"]}'
    )

    files = KeyRotatorSettings().keyrotator_kek_files

    assert files == {"vault": [Path("/k/v-1.pub.json"), Path("/k/v-2.pub.json")]}


def test_master_key_files_are_comma_separated_newest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M8_KEYROTATOR_MASTER_KEY_FILES", "/k/master-2.json, /k/master-1.json")

    files = KeyRotatorSettings().keyrotator_master_key_files

    assert files == [Path("/k/master-2.json"), Path("/k/master-1.json")]


def test_defaults_follow_the_design() -> None:
    settings = KeyRotatorSettings()

    assert settings.keyrotator_upload_key_lifetime == timedelta(minutes=15)
    assert settings.keyrotator_master_key is None
    assert settings.keyrotator_master_key_files == []


@pytest.mark.parametrize("text", ["P365D", "31536000"])
def test_a_signing_key_period_of_up_to_365_days_is_accepted(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("M8_KEYROTATOR_SIGNING_KEY_PERIOD", text)

    assert KeyRotatorSettings().keyrotator_signing_key_period == timedelta(days=365)


def test_a_signing_key_period_m8ctl_could_not_follow_is_refused_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M8_KEYROTATOR_SIGNING_KEY_PERIOD", "P366D")

    with pytest.raises(SettingsError) as refused:
        load_settings(KeyRotatorSettings)

    message = str(refused.value)
    assert "M8_KEYROTATOR_SIGNING_KEY_PERIOD" in message
    assert "at most 365 days" in message
    assert "m8ctl refuses a successor signing key" in message
