"""The rotator's settings read the way an operator writes them in the environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

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


def test_defaults_follow_the_design() -> None:
    settings = KeyRotatorSettings()

    assert settings.keyrotator_upload_key_lifetime == timedelta(minutes=15)
    assert settings.keyrotator_master_key is None
