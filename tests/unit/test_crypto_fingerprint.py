"""Keyed fingerprints: comparable across stores, not testable without the key."""

from __future__ import annotations

import base64
import re

import nacl.hash
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nacl.encoding import RawEncoder

from m8.crypto import FingerprintKey, SecretBytes, fingerprint, fingerprints_equal

KEY = FingerprintKey.generate()
values = st.binary(max_size=4096)


@settings(max_examples=100, deadline=None)
@given(value=values)
def test_equal_values_give_equal_fingerprints_in_any_holder(value: bytes) -> None:
    expected = fingerprint(value, KEY)

    assert fingerprint(bytes(value), KEY) == expected
    assert fingerprint(bytearray(value), KEY) == expected
    assert fingerprint(SecretBytes(value), KEY) == expected
    assert fingerprints_equal(fingerprint(value, KEY), expected)


@settings(max_examples=100, deadline=None)
@given(value=values)
def test_different_fingerprint_keys_give_different_fingerprints(value: bytes) -> None:
    assert fingerprint(value, KEY) != fingerprint(value, FingerprintKey.generate())


@settings(max_examples=100, deadline=None)
@given(first=values, second=values)
def test_different_values_give_different_fingerprints(first: bytes, second: bytes) -> None:
    assume(first != second)

    assert not fingerprints_equal(fingerprint(first, KEY), fingerprint(second, KEY))


def test_the_fingerprint_is_personalised_blake2b_256_as_fp1_base64url() -> None:
    key = FingerprintKey(bytes(range(32)))
    digest = nacl.hash.blake2b(
        b"value", digest_size=32, key=key.key, person=b"m8-fp-v1" + bytes(8), encoder=RawEncoder
    )

    shown = fingerprint(b"value", key)

    assert shown == "fp1:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert re.fullmatch(r"fp1:[A-Za-z0-9_-]{43}", shown)


def test_fingerprints_equal_rejects_different_and_odd_inputs() -> None:
    shown = fingerprint(b"x", KEY)

    assert fingerprints_equal(shown, shown)
    assert not fingerprints_equal(shown, shown[:-1])
    assert not fingerprints_equal(shown, "fp1:ü")


def test_the_key_never_shows_in_its_repr() -> None:
    assert KEY.key.hex() not in repr(KEY)
