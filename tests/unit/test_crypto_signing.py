"""Rotator and receipt key self signatures and endorsements (issue 10, contracts10 (a)).

A key's `not_after` is fixed when it is made and covered by its own signature and by its
predecessor's endorsement, so nobody can lengthen a key's life after the fact, and a rotator
endorsement can never pass as a receipt key's (the kind is in the signed context).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from m8.crypto import (
    InvalidInput,
    RotatorSigningKey,
    canonical_json,
    encode_verify_key,
    endorse,
    endorsement_valid,
    format_utc,
    key_self_signature,
    key_self_signature_valid,
)

OLD = RotatorSigningKey.generate("sig-old")
NEW = RotatorSigningKey.generate("sig-new")
NOT_AFTER = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _body(key: RotatorSigningKey, not_after: datetime | None) -> bytes:
    return canonical_json(
        {
            "signing_key_id": key.signing_key_id,
            "verify_key": encode_verify_key(key.verify_key),
            "not_after": None if not_after is None else format_utc(not_after),
        }
    )


def test_a_self_signature_is_the_keys_signature_over_the_contract_bytes() -> None:
    signature = key_self_signature(NEW, NOT_AFTER)
    NEW.verify_key.verify(b"m8-rotator-key-v1\x00" + _body(NEW, NOT_AFTER), signature)
    assert key_self_signature_valid(NEW.verify_key, "sig-new", NOT_AFTER, signature)


def test_an_endorsement_is_the_endorsers_signature_over_the_contract_bytes() -> None:
    signature = endorse(OLD, NEW.signing_key_id, NEW.verify_key, NOT_AFTER)
    OLD.verify_key.verify(b"m8-rotator-key-endorsement-v2\x00" + _body(NEW, NOT_AFTER), signature)
    assert endorsement_valid(OLD.verify_key, "sig-new", NEW.verify_key, NOT_AFTER, signature)


def test_a_receipt_key_endorsement_uses_its_own_context() -> None:
    signature = endorse(OLD, NEW.signing_key_id, NEW.verify_key, None, kind="receipt")
    OLD.verify_key.verify(b"m8-receipt-key-endorsement-v2\x00" + _body(NEW, None), signature)


def test_an_endorsement_covers_not_after() -> None:
    signature = endorse(OLD, NEW.signing_key_id, NEW.verify_key, NOT_AFTER)
    later = NOT_AFTER + timedelta(microseconds=1)
    assert not endorsement_valid(OLD.verify_key, "sig-new", NEW.verify_key, later, signature)
    assert not endorsement_valid(OLD.verify_key, "sig-new", NEW.verify_key, None, signature)


def test_a_self_signature_covers_not_after_and_the_id() -> None:
    signature = key_self_signature(NEW, NOT_AFTER)
    later = NOT_AFTER + timedelta(days=365)
    assert not key_self_signature_valid(NEW.verify_key, "sig-new", later, signature)
    assert not key_self_signature_valid(NEW.verify_key, "sig-other", NOT_AFTER, signature)
    assert not key_self_signature_valid(OLD.verify_key, "sig-new", NOT_AFTER, signature)


def test_an_endorsement_covers_the_key_and_its_id() -> None:
    signature = endorse(OLD, NEW.signing_key_id, NEW.verify_key, NOT_AFTER)
    other = RotatorSigningKey.generate("sig-new")
    assert not endorsement_valid(OLD.verify_key, "sig-new", other.verify_key, NOT_AFTER, signature)
    assert not endorsement_valid(OLD.verify_key, "sig-x", NEW.verify_key, NOT_AFTER, signature)
    assert not endorsement_valid(NEW.verify_key, "sig-new", NEW.verify_key, NOT_AFTER, signature)


def test_a_rotator_endorsement_does_not_pass_as_a_receipt_key_endorsement() -> None:
    rotator = endorse(OLD, NEW.signing_key_id, NEW.verify_key, None)
    receipt = endorse(OLD, NEW.signing_key_id, NEW.verify_key, None, kind="receipt")
    vk = NEW.verify_key
    assert not endorsement_valid(OLD.verify_key, "sig-new", vk, None, rotator, kind="receipt")
    assert not endorsement_valid(OLD.verify_key, "sig-new", vk, None, receipt)
    assert endorsement_valid(OLD.verify_key, "sig-new", vk, None, receipt, kind="receipt")


def test_a_self_signature_does_not_pass_as_an_endorsement_or_the_reverse() -> None:
    # A key "endorsing itself" must not look like a self signature, and vice versa.
    own = key_self_signature(NEW, NOT_AFTER)
    self_endorsed = endorse(NEW, NEW.signing_key_id, NEW.verify_key, NOT_AFTER)
    vk = NEW.verify_key
    assert not endorsement_valid(vk, "sig-new", vk, NOT_AFTER, own)
    assert not key_self_signature_valid(vk, "sig-new", NOT_AFTER, self_endorsed)


@pytest.mark.parametrize("signature", [b"", b"\x00" * 64, b"\x00" * 63, b"\x01" * 65])
def test_a_malformed_signature_is_not_valid(signature: bytes) -> None:
    assert not key_self_signature_valid(NEW.verify_key, "sig-new", NOT_AFTER, signature)
    assert not endorsement_valid(OLD.verify_key, "sig-new", NEW.verify_key, NOT_AFTER, signature)


def test_a_malformed_published_id_is_not_valid_rather_than_an_error() -> None:
    signature = key_self_signature(NEW, NOT_AFTER)
    assert not key_self_signature_valid(NEW.verify_key, "", NOT_AFTER, signature)
    assert not key_self_signature_valid(NEW.verify_key, "\ud800", NOT_AFTER, signature)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidInput, match="kind"):
        key_self_signature(NEW, NOT_AFTER, kind="upload")
    with pytest.raises(InvalidInput, match="kind"):
        endorse(OLD, "sig-new", NEW.verify_key, NOT_AFTER, kind="rotator-key-v1\x00")
    with pytest.raises(InvalidInput, match="kind"):
        endorsement_valid(OLD.verify_key, "sig-new", NEW.verify_key, None, b"", kind="x")


def test_a_naive_not_after_is_refused_when_signing() -> None:
    with pytest.raises(InvalidInput, match="timezone"):
        key_self_signature(NEW, datetime(2025, 3, 1, 12, 0))
