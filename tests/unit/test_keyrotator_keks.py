"""Which KEK new upload keys are sealed to, and how a bad KEK setup is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from m8.crypto import Kek, write_key_file
from m8.keyrotator.keks import KekPublicKeys, MissingKek
from m8.runtime import ConfigurationError


def _public(tmp_path: Path, kek_id: str) -> Path:
    return write_key_file(tmp_path / f"{kek_id}.pub.json", Kek.generate(kek_id).public)


def test_new_upload_keys_are_sealed_to_the_last_listed_kek(tmp_path: Path) -> None:
    files = {"vault": [_public(tmp_path, "vault-2"), _public(tmp_path, "vault-1")]}

    keks = KekPublicKeys.load(files)

    assert keks.newest("vault").kek_id == "vault-1"
    assert keks.store_types == {"vault"}


def test_a_store_type_without_a_kek_is_refused_with_advice(tmp_path: Path) -> None:
    keks = KekPublicKeys.load({"vault": [_public(tmp_path, "vault-1")]})

    with pytest.raises(MissingKek, match=r"no KEK for 'aws'.*m8 keys generate-kek") as refused:
        keks.newest("aws")
    assert refused.value.code == "no_kek"


def test_two_keks_with_one_id_are_refused(tmp_path: Path) -> None:
    first = _public(tmp_path, "vault-1")
    second = write_key_file(tmp_path / "copy.pub.json", Kek.generate("vault-1").public)

    with pytest.raises(ConfigurationError, match="appears twice"):
        KekPublicKeys.load({"vault": [first, second]})


def test_a_private_kek_listed_as_public_is_refused_by_file_name(tmp_path: Path) -> None:
    private = write_key_file(tmp_path / "vault-1.kek.json", Kek.generate("vault-1"))

    with pytest.raises(ConfigurationError, match=r"vault-1\.kek\.json is a m8-kek-v1 key file"):
        KekPublicKeys.load({"vault": [private]})


def test_no_kek_at_all_stops_the_start_with_advice() -> None:
    with pytest.raises(ConfigurationError, match="M8_KEYROTATOR_KEK_FILES"):
        KekPublicKeys.load({})
