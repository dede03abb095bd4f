"""The upload envelope: what m8ctl seals and a reactor opens (DESIGN 2, steps 2 and 4)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import Box, PrivateKey

from m8.crypto import (
    MAX_VALUE_BYTES,
    Binding,
    BindingMismatch,
    CryptoError,
    DecryptionFailed,
    EncryptedUpload,
    InvalidInput,
    KeyIdMismatch,
    MalformedEnvelope,
    PathMismatch,
    SecretBytes,
    StoreMismatch,
    UploadIdMismatch,
    UploadKeyPair,
    canonical_json,
    new_upload_id,
    open_envelope,
    seal_envelope,
)

UPLOAD_KEY = UploadKeyPair.generate()
BINDING = Binding(
    upload_id=new_upload_id(), key_id=UPLOAD_KEY.key_id, store_id="vault-prod", path="app/db"
)


def _seal(value: bytes, binding: Binding = BINDING) -> EncryptedUpload:
    return seal_envelope(value, binding, UPLOAD_KEY.public_key_bytes)


def _flip(data: bytes, index: int, mask: int) -> bytes:
    changed = bytearray(data)
    changed[index % len(changed)] ^= mask
    return bytes(changed)


def _encrypt_raw_envelope(document: bytes) -> EncryptedUpload:
    """Encrypt arbitrary plaintext the way seal_envelope does, to test what the reactor refuses."""
    client = PrivateKey.generate()
    message = Box(client, UPLOAD_KEY.private_key.public_key).encrypt(document)
    return EncryptedUpload(
        client_public_key=bytes(client.public_key),
        nonce=message.nonce,
        ciphertext=message.ciphertext,
    )


def _envelope_doc(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "v": 1,
        "upload_id": BINDING.upload_id,
        "key_id": BINDING.key_id,
        "store_id": BINDING.store_id,
        "path": BINDING.path,
        "value": "aGk=",
        "created_at": "2025-01-31T12:00:00.000000Z",
    }
    doc.update(changes)
    return doc


@settings(max_examples=60, deadline=None)
@given(value=st.binary(min_size=0, max_size=MAX_VALUE_BYTES))
def test_any_value_up_to_64_kib_round_trips(value: bytes) -> None:
    encrypted = _seal(value)

    with open_envelope(encrypted, UPLOAD_KEY.private_key, BINDING) as opened:
        assert opened.value == value
        assert opened.binding == BINDING


def test_the_empty_value_round_trips() -> None:
    with open_envelope(_seal(b""), UPLOAD_KEY.private_key, BINDING) as opened:
        assert opened.value.reveal() == b""


def test_the_opened_value_is_wiped_when_the_with_block_ends() -> None:
    with open_envelope(_seal(b"s3cret"), UPLOAD_KEY.private_key, BINDING) as opened:
        pass

    assert opened.value.wiped


def test_an_unsealed_private_key_in_secret_bytes_opens_the_envelope() -> None:
    key = SecretBytes(bytes(UPLOAD_KEY.private_key))

    with open_envelope(_seal(b"value"), key, BINDING) as opened:
        assert opened.value == b"value"


def test_the_created_at_inside_the_envelope_is_the_sealing_time() -> None:
    moment = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
    encrypted = seal_envelope(b"v", BINDING, UPLOAD_KEY.public_key_bytes, created_at=moment)

    with open_envelope(encrypted, UPLOAD_KEY.private_key, BINDING) as opened:
        assert opened.created_at == moment


def test_two_seals_of_one_value_share_no_nonce_client_key_or_ciphertext() -> None:
    first, second = _seal(b"same"), _seal(b"same")

    assert first.nonce != second.nonce
    assert first.client_public_key != second.client_public_key
    assert first.ciphertext != second.ciphertext


def test_a_value_over_64_kib_is_refused_by_the_client() -> None:
    with pytest.raises(InvalidInput):
        _seal(bytes(MAX_VALUE_BYTES + 1))


@settings(max_examples=100, deadline=None)
@given(
    part=st.sampled_from(["ciphertext", "nonce", "client_public_key"]),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_changed_byte_of_an_upload_is_rejected(part: str, index: int, mask: int) -> None:
    encrypted = _seal(b"top secret")
    tampered = dataclasses.replace(
        encrypted, **{part: _flip(getattr(encrypted, part), index, mask)}
    )

    with pytest.raises(DecryptionFailed):
        open_envelope(tampered, UPLOAD_KEY.private_key, BINDING)


def test_the_high_bit_of_the_client_public_key_cannot_be_flipped_unnoticed() -> None:
    # X25519 ignores this bit; without the canonical check the upload would still open.
    encrypted = _seal(b"top secret")
    tampered = dataclasses.replace(
        encrypted, client_public_key=_flip(encrypted.client_public_key, 31, 0x80)
    )

    with pytest.raises(DecryptionFailed):
        open_envelope(tampered, UPLOAD_KEY.private_key, BINDING)


def test_another_upload_key_cannot_open_the_envelope() -> None:
    with pytest.raises(DecryptionFailed):
        open_envelope(_seal(b"v"), PrivateKey.generate(), BINDING)


@pytest.mark.parametrize(
    ("field", "error"),
    [
        ("upload_id", UploadIdMismatch),
        ("key_id", KeyIdMismatch),
        ("store_id", StoreMismatch),
        ("path", PathMismatch),
    ],
)
def test_each_swapped_binding_field_is_rejected_with_its_own_error(
    field: str, error: type[BindingMismatch]
) -> None:
    encrypted = _seal(b"value")
    event_claims = dataclasses.replace(BINDING, **{field: "something-else"})

    with pytest.raises(error) as caught:
        open_envelope(encrypted, UPLOAD_KEY.private_key, event_claims)

    assert type(caught.value) is error
    assert caught.value.field == field


@settings(max_examples=50, deadline=None)
@given(
    field=st.sampled_from(["upload_id", "key_id", "store_id", "path"]),
    other=st.text(st.characters(codec="utf-8"), min_size=1),
)
def test_any_other_binding_value_is_rejected(field: str, other: str) -> None:
    encrypted = _seal(b"value")
    claimed = dataclasses.replace(BINDING, **{field: other})
    if claimed == BINDING:
        return

    with pytest.raises(BindingMismatch):
        open_envelope(encrypted, UPLOAD_KEY.private_key, claimed)


def test_the_upload_dict_form_round_trips_in_standard_base64() -> None:
    encrypted = _seal(b"value")
    as_dict = encrypted.to_dict()

    assert EncryptedUpload.from_dict(json.loads(json.dumps(as_dict))) == encrypted
    assert set(as_dict) == {"client_public_key", "nonce", "ciphertext"}


@pytest.mark.parametrize(
    "change",
    [
        {"nonce": "not base64!"},
        {"nonce": "AAAA"},
        {"client_public_key": "AAAA"},
        {"ciphertext": 5},
        {"extra": "x"},
    ],
)
def test_a_malformed_upload_dict_is_refused(change: dict[str, object]) -> None:
    as_dict: dict[str, object] = dict(_seal(b"value").to_dict())
    as_dict.update(change)

    with pytest.raises(MalformedEnvelope):
        EncryptedUpload.from_dict(as_dict)


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        canonical_json(_envelope_doc(v=2)),
        canonical_json(_envelope_doc(v=True)),
        canonical_json({k: v for k, v in _envelope_doc().items() if k != "path"}),
        canonical_json(_envelope_doc(extra="x")),
        canonical_json(_envelope_doc(value="%%%")),
        canonical_json(_envelope_doc(created_at="yesterday")),
        canonical_json(_envelope_doc(path="")),
        json.dumps(_envelope_doc(path="\ud800")).encode(),
    ],
)
def test_undecodable_or_unknown_version_envelopes_are_malformed(document: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        open_envelope(_encrypt_raw_envelope(document), UPLOAD_KEY.private_key, BINDING)


def test_error_messages_never_contain_the_value() -> None:
    value = b"hunter2-very-secret"
    document = canonical_json(_envelope_doc(v=9, value=value.decode()))
    errors: list[CryptoError] = []
    for encrypted, binding in [
        (_encrypt_raw_envelope(document), BINDING),
        (_seal(value), dataclasses.replace(BINDING, path="other")),
        (dataclasses.replace(_seal(value), nonce=bytes(24)), BINDING),
    ]:
        with pytest.raises(CryptoError) as caught:
            open_envelope(encrypted, UPLOAD_KEY.private_key, binding)
        errors.append(caught.value)

    for error in errors:
        assert "hunter2" not in str(error) + repr(error)
        assert error.__cause__ is None


def test_an_opened_value_cannot_be_pickled() -> None:
    with (
        open_envelope(_seal(b"v"), UPLOAD_KEY.private_key, BINDING) as opened,
        pytest.raises(TypeError),
    ):
        pickle.dumps(opened)
