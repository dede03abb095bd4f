"""tests/vectors/envelope.json holds what a client in another language must reproduce
(docs/security.md, "The upload protocol, step by step"); m8.crypto agrees with every value.

m8.crypto makes the client key pair and the nonce at random; here they are the vector's,
so that sealing is reproducible byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nacl.utils
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from m8.crypto import (
    Binding,
    EncryptedUpload,
    OutcomeReceipt,
    ReceiptSigningKey,
    SignedStatement,
    canonical_json,
    open_envelope,
    seal_envelope,
    sign_receipt,
    verify_receipt,
    verify_statement,
)
from m8.crypto.signing import RotatorSigningKey

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "envelope.json").read_text())


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _binding(vector: dict[str, Any]) -> Binding:
    return Binding(**vector["binding"])


def test_sealing_the_vectors_value_with_its_keys_and_nonce_gives_its_ciphertext(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vector = VECTORS["envelope"]
    client_key = PrivateKey(b64(vector["client_private_key"]))
    monkeypatch.setattr(PrivateKey, "generate", classmethod(lambda _: client_key))
    monkeypatch.setattr(nacl.utils, "random", lambda _size: b64(vector["nonce"]))
    sealed = seal_envelope(
        b64(vector["value"]),
        _binding(vector),
        b64(vector["upload_public_key"]),
        created_at=datetime.fromisoformat(vector["created_at"]).astimezone(UTC),
    )
    assert sealed.to_dict() == {
        "client_public_key": vector["client_public_key"],
        "nonce": vector["nonce"],
        "ciphertext": vector["ciphertext"],
    }
    assert vector["request"] == {
        "upload_id": vector["binding"]["upload_id"],
        "key_id": vector["binding"]["key_id"],
        "store": vector["binding"]["store_id"],
        "path": vector["binding"]["path"],
        **sealed.to_dict(),
    }
    assert hashlib.sha256(sealed.ciphertext).hexdigest() == vector["ciphertext_sha256"]


def test_the_vectors_plaintext_is_the_canonical_json_of_its_envelope() -> None:
    vector = VECTORS["envelope"]
    fields = json.loads(vector["plaintext"])
    assert fields == {
        "v": 1,
        **vector["binding"],
        "value": vector["value"],
        "created_at": vector["created_at"],
    }
    assert canonical_json(fields) == vector["plaintext"].encode()
    upload_key = PrivateKey(b64(vector["upload_private_key"]))
    assert bytes(upload_key.public_key) == b64(vector["upload_public_key"])
    assert bytes(PrivateKey(b64(vector["client_private_key"])).public_key) == b64(
        vector["client_public_key"]
    )


def test_a_reactor_opens_the_vectors_ciphertext_to_its_value() -> None:
    vector = VECTORS["envelope"]
    request = vector["request"]
    upload = EncryptedUpload.from_dict(
        {k: request[k] for k in ("client_public_key", "nonce", "ciphertext")}
    )
    upload_key = PrivateKey(b64(vector["upload_private_key"]))
    with open_envelope(upload, upload_key, _binding(vector)) as opened:
        assert opened.value.reveal() == b64(vector["value"])
        assert opened.created_at == datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def test_the_vectors_statement_verifies_with_its_rotator_key_over_its_signed_bytes() -> None:
    vector = VECTORS["statement"]
    key = RotatorSigningKey(
        vector["answer"]["signing_key_id"], SigningKey(b64(vector["rotator_signing_seed"]))
    )
    assert bytes(key.verify_key) == b64(vector["rotator_verify_key"])
    signed = SignedStatement.from_dict(vector["answer"])
    assert signed.statement.canonical_bytes() == b64(vector["signed_bytes"])
    assert key.signing_key.sign(b64(vector["signed_bytes"])).signature == signed.signature
    statement = verify_statement(
        signed,
        {signed.signing_key_id: key.verify_key},
        now=datetime(2025, 1, 31, 12, 0, tzinfo=UTC),
    )
    assert statement.public_key == b64(VECTORS["envelope"]["upload_public_key"])
    assert statement.key_id == VECTORS["envelope"]["binding"]["key_id"]


def test_the_vectors_receipt_verifies_over_the_outcome_of_its_upload() -> None:
    vector = VECTORS["receipt"]
    key = ReceiptSigningKey(
        RotatorSigningKey(vector["receipt_key_id"], SigningKey(b64(vector["receipt_seed"])))
    )
    assert bytes(key.verify_key) == b64(vector["receipt_verify_key"])
    outcome = OutcomeReceipt(**vector["outcome"])
    assert outcome.ciphertext_sha256 == VECTORS["envelope"]["ciphertext_sha256"]
    assert outcome.canonical_bytes() == b64(vector["signed_bytes"])
    assert sign_receipt(outcome, key) == b64(vector["signature"])
    verify_receipt(
        outcome,
        vector["receipt_key_id"],
        b64(vector["signature"]),
        {key.receipt_key_id: key.verify_key},
    )
