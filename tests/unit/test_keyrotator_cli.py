"""`m8 keys` makes key files an operator can hand out; `m8 keyrotator` says what it lacks."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m8.crypto import read_kek_file, read_kek_public_file
from m8.keyrotator.cli import app, keys_app
from m8.keyrotator.master_key import MasterKey

runner = CliRunner()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _generate_kek(out: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        keys_app, ["generate-kek", "--store-type", "vault", "--out", str(out), *extra]
    )
    return result.exit_code, result.output


def test_generate_kek_writes_a_private_file_for_reactors_and_a_public_one_for_the_rotator(
    tmp_path: Path,
) -> None:
    code, output = _generate_kek(tmp_path / "keks", "--kek-id", "vault-1")

    private = read_kek_file(tmp_path / "keks" / "vault-1.kek.json")
    public = read_kek_public_file(tmp_path / "keks" / "vault-1.pub.json")
    assert code == 0
    assert _mode(tmp_path / "keks" / "vault-1.kek.json") == 0o600
    assert public == private.public
    assert "M8_KEYROTATOR_KEK_FILES" in output
    assert "vault reactors only" in output
    assert base64.b64encode(bytes(private.private_key)).decode() not in output


def test_generate_kek_names_the_version_by_time_when_no_id_is_given(tmp_path: Path) -> None:
    code, _ = _generate_kek(tmp_path)

    [public] = tmp_path.glob("vault-*.pub.json")
    assert code == 0
    assert read_kek_public_file(public).kek_id.startswith("vault-20")


def test_generate_kek_never_overwrites_a_key(tmp_path: Path) -> None:
    _generate_kek(tmp_path, "--kek-id", "vault-1")
    before = (tmp_path / "vault-1.kek.json").read_bytes()

    code, output = _generate_kek(tmp_path, "--kek-id", "vault-1")

    assert code == 1
    assert "exists; choose another --kek-id" in output
    assert (tmp_path / "vault-1.kek.json").read_bytes() == before


@pytest.mark.parametrize("kek_id", ["../escape", "a/b", "-rf", ""])
def test_generate_kek_refuses_an_id_that_is_not_a_plain_file_name(
    tmp_path: Path, kek_id: str
) -> None:
    code, _ = _generate_kek(tmp_path, "--kek-id", kek_id)

    assert code in (1, 2)
    assert list(tmp_path.iterdir()) == []


def test_generate_master_key_writes_a_0600_file_the_rotator_can_use(tmp_path: Path) -> None:
    path = tmp_path / "master.json"

    result = runner.invoke(keys_app, ["generate-master-key", "--out", str(path)])

    assert result.exit_code == 0
    assert _mode(path) == 0o600
    assert MasterKey(read_kek_file(path)).key_id.startswith("rotator-master-")
    assert "M8_KEYROTATOR_MASTER_KEY_FILE" in result.output


def test_the_rotator_without_keys_says_what_to_set_and_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("M8_KEYROTATOR_KEK_FILES", "M8_KEYROTATOR_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)

    result = runner.invoke(app, [])

    assert result.exit_code == 1
    assert "error: no KEK is configured: set M8_KEYROTATOR_KEK_FILES" in result.output


def test_the_rotator_with_a_bad_setting_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M8_KEYROTATOR_UPLOAD_KEY_LIFETIME", "0")

    result = runner.invoke(app, [])

    assert result.exit_code == 1
    assert "M8_KEYROTATOR_UPLOAD_KEY_LIFETIME" in result.output


def test_the_rotator_names_every_bad_setting_but_never_echoes_a_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M8_KEYROTATOR_UPLOAD_KEY_LIFETIME", "hunter2-lifetime")
    monkeypatch.setenv("M8_LOG_FORMAT", "hunter2-format")

    result = runner.invoke(app, [])

    assert result.exit_code == 1
    assert "M8_KEYROTATOR_UPLOAD_KEY_LIFETIME: Input should be a valid timedelta" in result.output
    assert "M8_LOG_FORMAT: String should match pattern" in result.output
    assert "hunter2" not in result.output


def test_the_rotator_with_malformed_json_in_a_setting_names_it_without_the_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M8_KEYROTATOR_KEK_FILES", '{"vault": ["hunter2"')

    result = runner.invoke(app, [])

    assert result.exit_code == 1
    assert "keyrotator_kek_files" in result.output
    assert "hunter2" not in result.output


def test_rotate_master_key_without_a_master_key_or_a_database_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("M8_KEYROTATOR_MASTER_KEY_FILE", "M8_KEYROTATOR_MASTER_KEY", "M8_MONGODB_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("M8_KEYROTATOR_MASTER_KEY_FILES", raising=False)
    no_key = runner.invoke(keys_app, ["rotate-master-key"])
    made = runner.invoke(keys_app, ["generate-master-key", "--out", str(tmp_path / "m.json")])
    assert made.exit_code == 0, made.output
    monkeypatch.setenv("M8_KEYROTATOR_MASTER_KEY_FILES", str(tmp_path / "m.json"))
    no_database = runner.invoke(keys_app, ["rotate-master-key"])

    assert no_key.exit_code == no_database.exit_code == 1
    assert "m8 keys generate-master-key" in no_key.output
    assert "M8_MONGODB_URI is not set" in no_database.output
