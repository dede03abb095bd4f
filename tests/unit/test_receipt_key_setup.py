"""`m8 keys generate-receipt-key` makes a reactor's receipt key; a reactor must be given one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m8.crypto import (
    ReceiptKeyFile,
    ReceiptSigningKey,
    endorsement_valid,
    read_receipt_key_file,
    verify_key_fingerprint,
    write_receipt_key_file,
)
from m8.crypto.encoding import b64encode
from m8.devservices import manager
from m8.devservices.system import DevKeys, System
from m8.keyrotator.cli import keys_app
from m8.reactors.settings import ReactorSettings
from m8.runtime import ConfigurationError

runner = CliRunner()


def _generate(*args: str) -> tuple[int, str]:
    result = runner.invoke(keys_app, ["generate-receipt-key", *args])
    return result.exit_code, result.output


def test_generate_receipt_key_writes_a_0600_file_and_shows_only_the_public_fingerprint(
    tmp_path: Path,
) -> None:
    out = tmp_path / "receipt.json"
    code, output = _generate("--id", "receipt-vault-1", "--out", str(out))

    key_file = read_receipt_key_file(out)
    assert code == 0, output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert key_file.key.receipt_key_id == "receipt-vault-1"
    assert key_file.endorsed_by is None
    assert verify_key_fingerprint(key_file.key.verify_key) in output
    assert "M8_REACTOR_RECEIPT_KEY_FILE" in output
    assert b64encode(bytes(key_file.key.key.signing_key)) not in output


def test_generate_receipt_key_endorsed_by_the_old_key_lets_clients_follow(
    tmp_path: Path,
) -> None:
    old = ReceiptSigningKey.generate("receipt-vault-1")
    old_file = write_receipt_key_file(tmp_path / "old.json", ReceiptKeyFile(old))
    out = tmp_path / "new.json"

    code, output = _generate(
        "--id", "receipt-vault-2", "--out", str(out), "--endorse-with", str(old_file)
    )

    new = read_receipt_key_file(out)
    assert code == 0, output
    assert new.endorsed_by == "receipt-vault-1"
    assert new.endorsement is not None
    assert endorsement_valid(
        old.verify_key, "receipt-vault-2", new.key.verify_key, None, new.endorsement, "receipt"
    )
    assert "Endorsed by receipt-vault-1" in output


def test_generate_receipt_key_never_overwrites_a_key(tmp_path: Path) -> None:
    out = tmp_path / "receipt.json"
    _generate("--id", "receipt-vault-1", "--out", str(out))
    before = out.read_bytes()

    code, output = _generate("--id", "receipt-vault-1", "--out", str(out))

    assert code == 1
    assert "exists" in output
    assert out.read_bytes() == before


@pytest.mark.parametrize("key_id", ["../x", "a b", "-x", ""])
def test_generate_receipt_key_refuses_an_id_that_is_no_file_name(
    tmp_path: Path, key_id: str
) -> None:
    code, output = _generate("--id", key_id, "--out", str(tmp_path / "r.json"))

    assert code == 1
    assert "--id must be" in output
    assert not (tmp_path / "r.json").exists()


def test_generate_receipt_key_refuses_to_endorse_with_a_key_of_the_same_id(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old.json"
    write_receipt_key_file(old, ReceiptKeyFile(ReceiptSigningKey.generate("receipt-1")))

    code, output = _generate(
        "--id", "receipt-1", "--out", str(tmp_path / "new.json"), "--endorse-with", str(old)
    )

    assert code == 1
    assert "another --id" in output
    assert not (tmp_path / "new.json").exists()


def test_generate_receipt_key_refuses_an_endorser_file_others_can_read(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    write_receipt_key_file(old, ReceiptKeyFile(ReceiptSigningKey.generate("receipt-1")))
    old.chmod(0o644)

    code, output = _generate(
        "--id", "receipt-2", "--out", str(tmp_path / "new.json"), "--endorse-with", str(old)
    )

    assert code == 1
    assert "chmod 600" in output


def test_a_reactor_without_a_receipt_key_says_what_to_set_and_run() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ReactorSettings(reactor_receipt_key_file=None).receipt_key()
    assert "M8_REACTOR_RECEIPT_KEY_FILE" in str(raised.value)
    assert "m8 keys generate-receipt-key" in str(raised.value)


def test_a_reactor_receipt_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "receipt.json"
    write_receipt_key_file(path, ReceiptKeyFile(ReceiptSigningKey.generate("receipt-1")))
    path.chmod(0o644)

    with pytest.raises(ConfigurationError, match="chmod 600"):
        ReactorSettings(reactor_receipt_key_file=path).receipt_key()


def test_m8_dev_gives_each_reactor_a_receipt_key_of_its_own_and_nobody_else_one(
    tmp_path: Path,
) -> None:
    services = manager.Services(tmp_path)
    for name in ("rabbitmq", "mongodb", "openbao", "aws"):
        services.infos[name] = manager.ServiceInfo(name, "http://127.0.0.1:1", managed=False)
    keys = DevKeys(tmp_path / "keys")
    keys.ensure()

    environments = System(tmp_path).environments(services, keys)

    files = {name: env.get("M8_REACTOR_RECEIPT_KEY_FILE") for name, env in environments.items()}
    assert files["api"] is None
    assert files["keyrotator"] is None
    ids = {
        name: read_receipt_key_file(str(files[name])).key.receipt_key_id
        for name in ("reactor-vault", "reactor-aws")
    }
    assert ids == {"reactor-vault": "receipt-vault-dev", "reactor-aws": "receipt-aws-dev"}
