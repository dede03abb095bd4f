"""The rotator's master key keeps signing keys unreadable, and unforgeable, at rest; several
are loaded while one replaces another."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from m8.crypto import (
    DecryptionFailed,
    Kek,
    KeyIdMismatch,
    RotatorSigningKey,
    dumps_key,
    read_kek_file,
    write_key_file,
)
from m8.keyrotator.master_key import MasterKey, MasterKeys
from m8.keyrotator.settings import KeyRotatorSettings
from m8.runtime import ConfigurationError


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(Kek.generate("master-1"))


def test_a_sealed_signing_key_opens_again_with_its_master_key(master: MasterKey) -> None:
    key = RotatorSigningKey.generate("rsk-1-aa")

    opened = master.open("rsk-1-aa", master.seal(key))

    assert bytes(opened.signing_key) == bytes(key.signing_key)
    assert opened.signing_key_id == "rsk-1-aa"


def test_the_sealed_form_does_not_hold_the_seed(master: MasterKey) -> None:
    key = RotatorSigningKey.generate("rsk-1-aa")
    seed = bytes(key.signing_key)

    sealed = master.seal(key)

    assert seed not in sealed
    assert base64.b64encode(seed) not in base64.b64encode(sealed)


def test_another_master_key_cannot_open_it_and_says_which_key_failed(master: MasterKey) -> None:
    sealed = master.seal(RotatorSigningKey.generate("rsk-1-aa"))

    with pytest.raises(DecryptionFailed, match=r"'rsk-1-aa'.*'master-2'"):
        MasterKey(Kek.generate("master-2")).open("rsk-1-aa", sealed)


def test_a_sealed_key_moved_under_another_id_is_refused(master: MasterKey) -> None:
    sealed = master.seal(RotatorSigningKey.generate("rsk-1-aa"))

    with pytest.raises(KeyIdMismatch):
        master.open("rsk-2-bb", sealed)


def test_the_master_key_is_read_from_its_file_or_the_environment(tmp_path: Path) -> None:
    kek = Kek.generate("master-7")
    path = write_key_file(tmp_path / "master.json", kek)

    from_file = MasterKeys.from_settings(KeyRotatorSettings(keyrotator_master_key_file=path)).newest
    from_env = MasterKeys.from_settings(
        KeyRotatorSettings(keyrotator_master_key=dumps_key(kek))
    ).newest

    key = RotatorSigningKey.generate("rsk-1-aa")
    assert from_file.key_id == from_env.key_id == "master-7"
    assert bytes(from_env.open("rsk-1-aa", from_file.seal(key)).signing_key) == bytes(
        key.signing_key
    )


def test_without_a_master_key_the_rotator_says_how_to_make_one() -> None:
    with pytest.raises(ConfigurationError, match="m8 keys generate-master-key"):
        MasterKeys.from_settings(KeyRotatorSettings())


def test_a_master_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "master.json", Kek.generate("master-1"))
    os.chmod(path, 0o644)

    with pytest.raises(ConfigurationError, match="chmod 600"):
        MasterKeys.from_settings(KeyRotatorSettings(keyrotator_master_key_file=path))


def test_several_master_keys_load_newest_first_and_each_opens_what_it_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = write_key_file(tmp_path / "new.json", Kek.generate("master-2"))
    old = write_key_file(tmp_path / "old.json", Kek.generate("master-1"))
    monkeypatch.setenv("M8_KEYROTATOR_MASTER_KEY_FILES", f"{new}, {old}")

    masters = MasterKeys.from_settings(KeyRotatorSettings())

    assert masters.newest.key_id == "master-2"
    assert masters.key_ids == ["master-2", "master-1"]
    key = RotatorSigningKey.generate("rsk-1-aa")
    sealed = MasterKey(read_kek_file(old)).seal(key)
    opened = masters.get("master-1")
    assert opened is not None
    assert bytes(opened.open("rsk-1-aa", sealed).signing_key) == bytes(key.signing_key)
    assert masters.get("master-3") is None


def test_one_master_key_listed_twice_is_refused(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "master.json", Kek.generate("master-1"))

    with pytest.raises(ConfigurationError, match="'master-1' is listed twice"):
        MasterKeys.from_settings(KeyRotatorSettings(keyrotator_master_key_files=[path, path]))


def test_master_key_files_beside_a_single_master_key_setting_are_refused(tmp_path: Path) -> None:
    new = write_key_file(tmp_path / "new.json", Kek.generate("master-2"))
    old = write_key_file(tmp_path / "old.json", Kek.generate("master-1"))
    settings = KeyRotatorSettings(
        keyrotator_master_key_files=[new, old], keyrotator_master_key_file=old
    )

    with pytest.raises(ConfigurationError, match=r"set only one of .*MASTER_KEY_FILES"):
        MasterKeys.from_settings(settings)
