"""Operator key files: private ones 0600, created atomically, refused when others can read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from m8.crypto import (
    FingerprintKey,
    InsecureKeyFile,
    Kek,
    KeyFileError,
    KeyFileExists,
    RotatorSigningKey,
    dumps_key,
    loads_kek,
    read_fingerprint_key_file,
    read_kek_file,
    read_kek_public_file,
    read_signing_key_file,
    write_key_file,
)
from m8.crypto.keyfiles import read_private_file, write_private_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_kek_file_is_written_0600_and_reads_back(tmp_path: Path) -> None:
    kek = Kek.generate("kek-1")
    path = write_key_file(tmp_path / "kek.json", kek)

    loaded = read_kek_file(path)

    assert _mode(path) == 0o600
    assert loaded.kek_id == "kek-1"
    assert bytes(loaded.private_key) == bytes(kek.private_key)


def test_a_signing_key_file_reads_back_the_same_key(tmp_path: Path) -> None:
    key = RotatorSigningKey.generate("sig-1")
    path = write_key_file(tmp_path / "signing.json", key)

    loaded = read_signing_key_file(path)

    assert _mode(path) == 0o600
    assert loaded.signing_key_id == "sig-1"
    assert loaded.verify_key == key.verify_key


def test_a_fingerprint_key_file_reads_back_the_same_key(tmp_path: Path) -> None:
    key = FingerprintKey.generate()
    path = write_key_file(tmp_path / "fp.json", key)

    assert _mode(path) == 0o600
    assert read_fingerprint_key_file(path).key == key.key


def test_the_kek_public_half_is_exported_world_readable(tmp_path: Path) -> None:
    kek = Kek.generate("kek-1")
    path = write_key_file(tmp_path / "kek.pub.json", kek.public)

    assert _mode(path) == 0o644
    assert read_kek_public_file(path) == kek.public
    assert "private_key" not in path.read_text()


def test_an_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "kek.json", Kek.generate("kek-1"))
    before = path.read_bytes()

    with pytest.raises(KeyFileExists):
        write_key_file(path, Kek.generate("kek-2"))

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek.json"]


def test_overwriting_when_asked_replaces_the_key_and_stays_0600(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "kek.json", Kek.generate("kek-1"))

    write_key_file(path, Kek.generate("kek-2"), overwrite=True)

    assert read_kek_file(path).kek_id == "kek-2"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kek.json"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "kek.json", Kek.generate("kek-1"))
    os.chmod(path, mode)

    with pytest.raises(InsecureKeyFile) as caught:
        read_kek_file(path)

    assert "chmod 600" in str(caught.value)


def test_an_owner_read_only_key_file_is_accepted(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "kek.json", Kek.generate("kek-1"))
    os.chmod(path, 0o400)

    assert read_kek_file(path).kek_id == "kek-1"


def test_the_wrong_kind_of_key_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "fp.json", FingerprintKey.generate())

    with pytest.raises(KeyFileError, match="m8-fingerprint-key-v1 key file, expected m8-kek-v1"):
        read_kek_file(path)


def test_errors_about_a_key_file_never_quote_the_key() -> None:
    text = dumps_key(Kek.generate("kek-1"))
    broken = text.replace('"kek_id"', '"kek_id_"')
    truncated = text[: len(text) // 2]

    for bad in (broken, truncated):
        with pytest.raises(KeyFileError) as caught:
            loads_kek(bad)
        assert 'private_key": "' not in str(caught.value)
        assert caught.value.__cause__ is None
        secret = text.split('"private_key": "')[1].split('"')[0]
        assert secret not in str(caught.value)
        assert secret[:8] not in str(caught.value)


def test_a_missing_key_file_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot open"):
        read_kek_file(tmp_path / "absent.json")


def test_a_private_file_is_written_0600_and_reads_back_text_or_bytes(tmp_path: Path) -> None:
    text = write_private_file(tmp_path / "token", "tøken\n")
    raw = write_private_file(tmp_path / "blob", b"\x00\xff")

    assert _mode(text) == 0o600
    assert read_private_file(text) == "tøken\n".encode()
    assert read_private_file(raw) == b"\x00\xff"


def test_replacing_a_world_readable_file_leaves_it_private(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    os.chmod(path, 0o644)

    write_private_file(path, "new", overwrite=True)

    assert _mode(path) == 0o600
    assert read_private_file(path) == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_existing_private_file_is_kept_unless_overwriting_is_asked(tmp_path: Path) -> None:
    path = write_private_file(tmp_path / "token", "first")

    with pytest.raises(KeyFileExists):
        write_private_file(path, "second")

    assert read_private_file(path) == b"first"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o601])
def test_a_private_file_others_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_private_file(tmp_path / "token", "t")
    os.chmod(path, mode)

    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        read_private_file(path)
