"""Upload key pairs sealed to a KEK, and the reactor's KEK ring."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m8.crypto import (
    DecryptionFailed,
    DuplicateKeyId,
    InvalidInput,
    Kek,
    KekRing,
    KeyIdMismatch,
    MalformedEnvelope,
    SealedUploadKey,
    SecretBytes,
    UnknownKek,
    UploadKeyPair,
    seal_upload_key,
    unseal_upload_key,
)

KEK = Kek.generate("kek-2025-01")


def test_an_upload_key_id_is_a_fresh_uuid4() -> None:
    first, second = UploadKeyPair.generate(), UploadKeyPair.generate()

    assert uuid.UUID(first.key_id).version == 4
    assert first.key_id != second.key_id


def test_a_sealed_upload_key_unseals_with_its_kek() -> None:
    pair = UploadKeyPair.generate()
    sealed = seal_upload_key(pair, KEK.public)

    with unseal_upload_key(sealed, KEK) as private:
        assert isinstance(private, SecretBytes)
        assert private == bytes(pair.private_key)
    assert sealed.kek_id == KEK.kek_id
    assert sealed.key_id == pair.key_id


def test_the_ring_unseals_with_the_kek_the_key_was_sealed_to() -> None:
    old, new = Kek.generate("kek-1"), Kek.generate("kek-2")
    ring = KekRing([old, new])
    pair = UploadKeyPair.generate()

    assert ring.newest is new
    with unseal_upload_key(seal_upload_key(pair, old.public), ring) as private:
        assert private == bytes(pair.private_key)


def test_a_key_sealed_to_a_retired_kek_is_refused_by_name() -> None:
    ring = KekRing([Kek.generate("kek-2")])
    sealed = seal_upload_key(UploadKeyPair.generate(), Kek.generate("kek-1").public)

    with pytest.raises(UnknownKek) as caught:
        unseal_upload_key(sealed, ring)

    assert caught.value.kek_id == "kek-1"


def test_a_ring_refuses_duplicate_or_no_keks() -> None:
    with pytest.raises(DuplicateKeyId):
        KekRing([Kek.generate("a"), Kek.generate("a")])
    with pytest.raises(InvalidInput):
        KekRing([])


def test_another_kek_with_the_same_id_cannot_unseal() -> None:
    sealed = seal_upload_key(UploadKeyPair.generate(), KEK.public)

    with pytest.raises(DecryptionFailed):
        unseal_upload_key(sealed, Kek.generate(KEK.kek_id))


@settings(max_examples=100, deadline=None)
@given(index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_a_sealed_key_is_rejected(index: int, mask: int) -> None:
    sealed = seal_upload_key(UploadKeyPair.generate(), KEK.public)
    changed = bytearray(sealed.sealed_private_key)
    changed[index % len(changed)] ^= mask

    with pytest.raises(DecryptionFailed):
        unseal_upload_key(dataclasses.replace(sealed, sealed_private_key=bytes(changed)), KEK)


def test_a_sealed_key_moved_under_another_key_id_is_refused() -> None:
    sealed = seal_upload_key(UploadKeyPair.generate(), KEK.public)
    moved = dataclasses.replace(sealed, key_id=str(uuid.uuid4()))

    with pytest.raises(KeyIdMismatch):
        unseal_upload_key(moved, KEK)


def test_the_sealed_key_dict_form_round_trips() -> None:
    sealed = seal_upload_key(UploadKeyPair.generate(), KEK.public)

    assert SealedUploadKey.from_dict(sealed.to_dict()) == sealed
    with pytest.raises(MalformedEnvelope):
        SealedUploadKey.from_dict({**sealed.to_dict(), "sealed_private_key": "!"})


def test_key_reprs_hide_private_material() -> None:
    pair = UploadKeyPair.generate()
    sealed = seal_upload_key(pair, KEK.public)

    for shown in (repr(pair), repr(KEK), repr(sealed), repr(KekRing([KEK]))):
        assert bytes(pair.private_key).hex() not in shown
        assert "private_key=" not in shown
        assert "sealed_private_key=" not in shown
