"""Rotator-signed upload key statements and the verify keys m8ctl pins (ADR-3 #SEC2)."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import VerifyKey

from m8.crypto import (
    STATEMENT_CONTEXT,
    BadSignature,
    InvalidInput,
    MalformedStatement,
    RotatorSigningKey,
    SignedStatement,
    StatementExpired,
    UnknownSigningKey,
    UploadKeyPair,
    UploadKeyStatement,
    decode_verify_key,
    encode_verify_key,
    sign_statement,
    verify_key_fingerprint,
    verify_statement,
)

SIGNER = RotatorSigningKey.generate("sig-2025-01")
PINNED: dict[str, VerifyKey] = {SIGNER.signing_key_id: SIGNER.verify_key}
NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def _statement(**changes: object) -> UploadKeyStatement:
    fields: dict[str, object] = {
        "key_id": UploadKeyPair.generate().key_id,
        "public_key": UploadKeyPair.generate().public_key_bytes,
        "store_id": "vault-prod",
        "path": "app/db",
        "expires_at": NOW + timedelta(minutes=15),
        "kek_id": "kek-2025-01",
    }
    fields.update(changes)
    return UploadKeyStatement(**fields)  # type: ignore[arg-type]


def test_a_signed_statement_verifies_against_the_pinned_key() -> None:
    statement = _statement()

    assert verify_statement(sign_statement(statement, SIGNER), PINNED, now=NOW) == statement


def test_a_statement_survives_the_json_round_trip_and_still_verifies() -> None:
    signed = sign_statement(_statement(), SIGNER)

    received = SignedStatement.from_dict(json.loads(json.dumps(signed.to_dict())))

    assert received == signed
    assert verify_statement(received, PINNED, now=NOW) == signed.statement


def test_the_signed_bytes_are_the_context_then_sorted_compact_json() -> None:
    statement = _statement()

    signed_bytes = statement.canonical_bytes()

    assert signed_bytes.startswith(STATEMENT_CONTEXT)
    body = signed_bytes[len(STATEMENT_CONTEXT) :]
    assert body == json.dumps(statement.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert statement.to_dict()["expires_at"] == "2025-01-31T12:15:00.000000Z"


_CHANGES: dict[str, Any] = {
    "key_id": "another-key",
    "public_key": bytes(32),
    "store_id": "aws-prod",
    "path": "app/other",
    "expires_at": NOW + timedelta(days=365),
    "kek_id": "kek-evil",
}


@pytest.mark.parametrize("field", sorted(_CHANGES))
def test_a_statement_with_any_field_changed_fails_verification(field: str) -> None:
    signed = sign_statement(_statement(), SIGNER)
    forged = dataclasses.replace(
        signed, statement=dataclasses.replace(signed.statement, **{field: _CHANGES[field]})
    )

    with pytest.raises(BadSignature):
        verify_statement(forged, PINNED, now=NOW)


@settings(max_examples=100, deadline=None)
@given(index=st.integers(min_value=0, max_value=63), mask=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_the_signature_fails(index: int, mask: int) -> None:
    signed = sign_statement(_statement(), SIGNER)
    signature = bytearray(signed.signature)
    signature[index] ^= mask

    with pytest.raises(BadSignature):
        verify_statement(dataclasses.replace(signed, signature=bytes(signature)), PINNED, now=NOW)


def test_a_statement_signed_by_an_unpinned_key_id_is_refused() -> None:
    other = RotatorSigningKey.generate("sig-unknown")

    with pytest.raises(UnknownSigningKey) as caught:
        verify_statement(sign_statement(_statement(), other), PINNED, now=NOW)

    assert caught.value.signing_key_id == "sig-unknown"


def test_a_statement_signed_by_another_key_under_a_pinned_id_is_refused() -> None:
    impostor = RotatorSigningKey.generate(SIGNER.signing_key_id)

    with pytest.raises(BadSignature):
        verify_statement(sign_statement(_statement(), impostor), PINNED, now=NOW)


def test_a_truncated_signature_is_a_bad_signature() -> None:
    signed = sign_statement(_statement(), SIGNER)

    with pytest.raises(BadSignature):
        verify_statement(dataclasses.replace(signed, signature=signed.signature[:10]), PINNED)


def test_an_expired_statement_is_refused() -> None:
    signed = sign_statement(_statement(), SIGNER)

    with pytest.raises(StatementExpired):
        verify_statement(signed, PINNED, now=NOW + timedelta(minutes=15))


def test_a_statement_needs_a_32_byte_key_and_an_aware_expiry() -> None:
    with pytest.raises(InvalidInput):
        _statement(public_key=b"short")
    with pytest.raises(InvalidInput):
        _statement(expires_at=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    "change",
    [
        {"public_key": "not base64"},
        {"expires_at": "2025-01-31T12:15:00+00:00"},
        {"expires_at": "2025-01-31T12:15:00.000000+01:00Z"},
        {"key_id": ""},
        {"extra": 1},
    ],
)
def test_a_malformed_statement_dict_is_refused(change: dict[str, object]) -> None:
    as_dict: dict[str, object] = dict(_statement().to_dict())
    as_dict.update(change)

    with pytest.raises(MalformedStatement):
        UploadKeyStatement.from_dict(as_dict)


def test_the_verify_key_fingerprint_is_stable_and_readable() -> None:
    fingerprint = verify_key_fingerprint(SIGNER.verify_key)

    assert re.fullmatch(r"ed25519:[0-9a-f]{4}(-[0-9a-f]{4}){7}", fingerprint)
    assert verify_key_fingerprint(decode_verify_key(encode_verify_key(SIGNER.verify_key))) == (
        fingerprint
    )
    assert verify_key_fingerprint(RotatorSigningKey.generate("x").verify_key) != fingerprint


def test_a_bad_verify_key_encoding_is_refused() -> None:
    with pytest.raises(InvalidInput):
        decode_verify_key("AAAA")


def test_the_signing_key_repr_hides_the_seed() -> None:
    assert bytes(SIGNER.signing_key).hex() not in repr(SIGNER)
    assert "signing_key=" not in repr(SIGNER)
