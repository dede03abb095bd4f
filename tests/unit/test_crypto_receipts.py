"""Outcome receipts: a reactor's signature over exactly what it recorded, and its key file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from nacl.signing import VerifyKey

from m8.crypto import (
    RECEIPT_CONTEXT,
    BadSignature,
    InsecureKeyFile,
    InvalidInput,
    KeyFileError,
    KeyFileExists,
    OutcomeReceipt,
    ReceiptKeyFile,
    ReceiptSigningKey,
    RotatorSigningKey,
    UnknownSigningKey,
    canonical_json,
    endorse,
    endorsement_valid,
    read_receipt_key_file,
    sign_receipt,
    verify_receipt,
    write_receipt_key_file,
)
from m8.crypto.encoding import b64encode
from m8.crypto.statements import STATEMENT_CONTEXT
from m8.domain.events import SecretStored
from m8.eventsourcing import registry

STORED = OutcomeReceipt(
    upload_id="0f6e2c56-0d1b-4f57-9a3e-3b1f5b1f3c11",
    store="vault-a",
    path="team-a/db/password",
    status="stored",
    upstream_version="3",
    fingerprint="fp1:abcd",
    ciphertext_sha256=hashlib.sha256(b"the ciphertext m8ctl sent").hexdigest(),
)
REJECTED = OutcomeReceipt(
    upload_id="0f6e2c56-0d1b-4f57-9a3e-3b1f5b1f3c12",
    store="vault-a",
    path="team-a/db/password",
    status="rejected",
    upstream_version=None,
    fingerprint=None,
    ciphertext_sha256="ab" * 32,
)


@pytest.fixture
def key() -> ReceiptSigningKey:
    return ReceiptSigningKey.generate("receipt-vault-1")


def pinned(key: ReceiptSigningKey) -> dict[str, VerifyKey]:
    return {key.receipt_key_id: key.verify_key}


@pytest.mark.parametrize("receipt", [STORED, REJECTED], ids=["stored", "rejected"])
def test_a_receipt_signed_by_a_reactor_verifies_against_its_pinned_key(
    key: ReceiptSigningKey, receipt: OutcomeReceipt
) -> None:
    verify_receipt(receipt, key.receipt_key_id, sign_receipt(receipt, key), pinned(key))


def test_the_signed_bytes_are_the_context_and_the_canonical_json_of_every_field() -> None:
    assert STORED.canonical_bytes() == b"m8-outcome-receipt-v1\x00" + canonical_json(
        {
            "upload_id": STORED.upload_id,
            "store": "vault-a",
            "path": "team-a/db/password",
            "status": "stored",
            "upstream_version": "3",
            "fingerprint": "fp1:abcd",
            "ciphertext_sha256": STORED.ciphertext_sha256,
        }
    )
    assert REJECTED.canonical_bytes() == (
        b'm8-outcome-receipt-v1\x00{"ciphertext_sha256":"' + b"ab" * 32 + b'",'
        b'"fingerprint":null,"path":"team-a/db/password",'
        b'"status":"rejected","store":"vault-a",'
        b'"upload_id":"0f6e2c56-0d1b-4f57-9a3e-3b1f5b1f3c12","upstream_version":null}'
    )


@pytest.mark.parametrize(
    "change",
    [
        {"upload_id": "0f6e2c56-0d1b-4f57-9a3e-3b1f5b1f3c99"},
        {"store": "vault-b"},
        {"path": "team-a/db/other"},
        {"status": "failed"},
        {"upstream_version": "4"},
        {"upstream_version": None},
        {"fingerprint": "fp1:ffff"},
        {"fingerprint": None},
        {"ciphertext_sha256": hashlib.sha256(b"another ciphertext").hexdigest()},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_a_receipt_with_any_field_changed_is_a_bad_signature(
    key: ReceiptSigningKey, change: dict[str, str | None]
) -> None:
    signature = sign_receipt(STORED, key)
    changed = dataclasses.replace(STORED, **change)  # type: ignore[arg-type]

    with pytest.raises(BadSignature, match="receipt-vault-1"):
        verify_receipt(changed, key.receipt_key_id, signature, pinned(key))


def test_a_receipt_under_a_key_id_nobody_pinned_is_unknown(key: ReceiptSigningKey) -> None:
    signature = sign_receipt(STORED, key)

    with pytest.raises(UnknownSigningKey, match="not among the pinned receipt keys"):
        verify_receipt(STORED, "receipt-other", signature, pinned(key))


def test_a_receipt_signed_by_another_key_under_the_pinned_id_is_a_bad_signature(
    key: ReceiptSigningKey,
) -> None:
    impostor = ReceiptSigningKey.generate(key.receipt_key_id)

    with pytest.raises(BadSignature):
        verify_receipt(STORED, key.receipt_key_id, sign_receipt(STORED, impostor), pinned(key))


@pytest.mark.parametrize("size", [0, 63, 65])
def test_a_signature_of_the_wrong_size_is_a_bad_signature(
    key: ReceiptSigningKey, size: int
) -> None:
    signature = (sign_receipt(STORED, key) * 2)[:size]

    with pytest.raises(BadSignature):
        verify_receipt(STORED, key.receipt_key_id, signature, pinned(key))


@pytest.mark.parametrize("context", [b"", STATEMENT_CONTEXT, b"m8-outcome-receipt-v2\x00"])
def test_the_same_key_signing_the_same_fields_in_another_context_is_no_receipt(
    key: ReceiptSigningKey, context: bytes
) -> None:
    body = STORED.canonical_bytes().removeprefix(RECEIPT_CONTEXT)
    signature = key.key.signing_key.sign(context + body).signature

    with pytest.raises(BadSignature):
        verify_receipt(STORED, key.receipt_key_id, signature, pinned(key))


@pytest.mark.parametrize(
    "digest",
    ["", "ab" * 31, "AB" * 32, "ab" * 32 + "00", "zz" * 32, "ab" * 31 + "a\n"],
    ids=["empty", "short", "upper-case", "long", "not-hex", "newline"],
)
def test_a_ciphertext_hash_that_is_not_64_lowercase_hex_digits_is_no_receipt(
    digest: str,
) -> None:
    with pytest.raises(InvalidInput, match="ciphertext_sha256"):
        dataclasses.replace(STORED, ciphertext_sha256=digest)


def test_an_unknown_status_is_no_receipt() -> None:
    with pytest.raises(InvalidInput, match="status"):
        dataclasses.replace(STORED, status="deleted")  # type: ignore[arg-type]


def test_a_successor_carries_the_old_keys_endorsement_of_kind_receipt(
    key: ReceiptSigningKey,
) -> None:
    new = ReceiptSigningKey.generate("receipt-vault-2")
    successor = ReceiptKeyFile.successor(new, key)

    assert successor.endorsed_by == "receipt-vault-1"
    assert successor.endorsement is not None
    args = ("receipt-vault-2", new.verify_key, None, successor.endorsement)
    assert endorsement_valid(key.verify_key, *args, kind="receipt")
    assert not endorsement_valid(key.verify_key, *args, kind="rotator")


def test_a_rotator_key_endorsement_never_passes_as_a_receipt_key_endorsement(
    key: ReceiptSigningKey,
) -> None:
    new = ReceiptSigningKey.generate("receipt-vault-2")
    endorser = RotatorSigningKey(key.receipt_key_id, key.key.signing_key)
    as_rotator = endorse(endorser, "receipt-vault-2", new.verify_key, None, kind="rotator")

    assert not endorsement_valid(
        key.verify_key, "receipt-vault-2", new.verify_key, None, as_rotator, kind="receipt"
    )


def test_a_receipt_key_file_is_written_0600_and_reads_back_the_same_key(
    key: ReceiptSigningKey, tmp_path: Path
) -> None:
    new = ReceiptSigningKey.generate("receipt-vault-2")
    path = write_receipt_key_file(tmp_path / "receipt.json", ReceiptKeyFile.successor(new, key))

    read = read_receipt_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read.key.receipt_key_id == "receipt-vault-2"
    assert bytes(read.key.verify_key) == bytes(new.verify_key)
    assert read.endorsed_by == "receipt-vault-1"
    doc = json.loads(path.read_text())
    assert set(doc) == {"type", "receipt_key_id", "seed", "endorsed_by", "endorsement"}
    assert doc["type"] == "m8-receipt-key-v1"
    # The same key signs: a receipt made with the file's key verifies under the original.
    verify_receipt(STORED, new.receipt_key_id, sign_receipt(STORED, read.key), pinned(new))


def test_a_receipt_key_file_without_endorsement_holds_only_type_id_and_seed(
    key: ReceiptSigningKey, tmp_path: Path
) -> None:
    path = write_receipt_key_file(tmp_path / "receipt.json", ReceiptKeyFile(key))

    assert set(json.loads(path.read_text())) == {"type", "receipt_key_id", "seed"}
    assert read_receipt_key_file(path).endorsed_by is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_receipt_key_file_group_or_others_can_access_is_refused(
    key: ReceiptSigningKey, tmp_path: Path, mode: int
) -> None:
    path = write_receipt_key_file(tmp_path / "receipt.json", ReceiptKeyFile(key))
    os.chmod(path, mode)

    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        read_receipt_key_file(path)


def test_a_receipt_key_file_is_never_overwritten(key: ReceiptSigningKey, tmp_path: Path) -> None:
    path = write_receipt_key_file(tmp_path / "receipt.json", ReceiptKeyFile(key))
    before = path.read_bytes()

    with pytest.raises(KeyFileExists):
        write_receipt_key_file(path, ReceiptKeyFile(ReceiptSigningKey.generate("other")))
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "doc",
    [
        {"kind": "m8-signing-key-v1", "signing_key_id": "x", "seed": "SEED"},
        {"type": "m8-receipt-key-v1", "receipt_key_id": "x"},
        {"type": "m8-receipt-key-v1", "receipt_key_id": "x", "seed": "SEED", "extra": 1},
        {"type": "m8-receipt-key-v1", "receipt_key_id": "x", "seed": "SEED", "endorsed_by": "y"},
        {"type": "m8-receipt-key-v1", "receipt_key_id": "", "seed": "SEED"},
        {"type": "m8-receipt-key-v1", "receipt_key_id": "x", "seed": b64encode(b"short")},
    ],
    ids=["rotator-key", "no-seed", "unknown-field", "half-endorsed", "empty-id", "short-seed"],
)
def test_a_malformed_receipt_key_file_is_refused_without_quoting_it(
    key: ReceiptSigningKey, tmp_path: Path, doc: dict[str, object]
) -> None:
    seed = b64encode(bytes(key.key.signing_key))
    text = json.dumps({k: seed if v == "SEED" else v for k, v in doc.items()})
    path = tmp_path / "receipt.json"
    path.write_text(text)
    path.chmod(0o600)

    with pytest.raises(KeyFileError) as raised:
        read_receipt_key_file(path)
    assert seed not in str(raised.value)


def test_an_outcome_event_recorded_before_receipts_still_decodes_without_one() -> None:
    old = {
        "upload_id": STORED.upload_id,
        "store": "vault-a",
        "store_type": "vault",
        "path": "team-a/db/password",
        "upstream_version": "1",
        "fingerprint": "fp1:abcd",
    }
    event = registry.decode("SecretStored", 1, old)

    assert isinstance(event, SecretStored)
    assert (event.receipt_key_id, event.receipt_signature) == (None, None)
