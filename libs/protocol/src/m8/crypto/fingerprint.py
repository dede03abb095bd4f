"""Keyed fingerprints of secret values: comparable across stores, useless for guessing.

fingerprint = BLAKE2b-256(value, key=fp_key, person="m8-fp-v1"), shown as ``fp1:`` plus
unpadded base64url. The same value has the same fingerprint in every store; without
``fp_key`` (held by reactors only) nobody can test a guess against a fingerprint.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import nacl.hash
import nacl.utils
from nacl.encoding import RawEncoder

from m8.crypto.encoding import urlsafe_b64encode_unpadded
from m8.crypto.errors import InvalidInput
from m8.crypto.secretbytes import SecretBytes

FINGERPRINT_PREFIX = "fp1:"
FINGERPRINT_KEY_BYTES = 32
FINGERPRINT_BYTES = 32
# libsodium takes exactly 16 personalisation bytes; PyNaCl zero-pads shorter values, so
# this is b"m8-fp-v1" followed by 8 zero bytes (a unit test pins that equivalence).
_PERSON = b"m8-fp-v1"


@dataclass(frozen=True, slots=True, eq=False)
class FingerprintKey:
    """The 32-byte BLAKE2b key shared by all reactors."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != FINGERPRINT_KEY_BYTES:
            raise InvalidInput(f"a fingerprint key is {FINGERPRINT_KEY_BYTES} bytes")

    @classmethod
    def generate(cls) -> FingerprintKey:
        """A fresh random key."""
        return cls(nacl.utils.random(FINGERPRINT_KEY_BYTES))


def fingerprint(value: bytes | bytearray | SecretBytes, key: FingerprintKey) -> str:
    """The ``fp1:`` fingerprint of ``value``.

    PyNaCl only hashes ``bytes``, so a ``SecretBytes`` or ``bytearray`` is copied into an
    immutable object for the call; see :class:`SecretBytes` for what that means.
    """
    data = value.reveal() if isinstance(value, SecretBytes) else bytes(value)
    digest = nacl.hash.blake2b(
        data, digest_size=FINGERPRINT_BYTES, key=key.key, person=_PERSON, encoder=RawEncoder
    )
    return FINGERPRINT_PREFIX + urlsafe_b64encode_unpadded(digest)


def fingerprints_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two fingerprints."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
