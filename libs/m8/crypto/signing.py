"""The key rotator's Ed25519 signing keys and how their public halves are shown and pinned."""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.exceptions
import nacl.hash
from nacl.encoding import RawEncoder
from nacl.signing import SigningKey, VerifyKey

from m8.crypto.encoding import b64decode, b64encode, canonical_json, check_text
from m8.crypto.errors import InvalidInput

VERIFY_KEY_FINGERPRINT_PREFIX = "ed25519:"
_VK_FP_PERSON = b"m8-vk-fp-v1"
_VK_FP_BYTES = 16


@dataclass(frozen=True, slots=True, eq=False)
class RotatorSigningKey:
    """An Ed25519 signing key of the rotator, versioned by ``signing_key_id``."""

    signing_key_id: str
    signing_key: SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        check_text(self.signing_key_id, field="signing_key_id")

    @classmethod
    def generate(cls, signing_key_id: str) -> RotatorSigningKey:
        """A fresh random signing key."""
        return cls(signing_key_id=signing_key_id, signing_key=SigningKey.generate())

    @property
    def verify_key(self) -> VerifyKey:
        """The public half that m8ctl pins."""
        return self.signing_key.verify_key


def encode_verify_key(verify_key: VerifyKey) -> str:
    """Standard base64 of the 32 raw key bytes."""
    return b64encode(bytes(verify_key))


def decode_verify_key(text: object) -> VerifyKey:
    """Inverse of :func:`encode_verify_key`; :class:`InvalidInput` on bad input."""
    raw = b64decode(text, field="verify_key", error=InvalidInput)
    try:
        return VerifyKey(raw)
    except nacl.exceptions.CryptoError:
        raise InvalidInput("verify_key must be 32 bytes") from None


def verify_key_fingerprint(verify_key: VerifyKey) -> str:
    """A short, stable name for a verify key that a person can compare and pin.

    ``ed25519:`` then 16 bytes of personalised BLAKE2b of the raw key as hex in groups of
    four, e.g. ``ed25519:9f86-d081-884c-7d65-9a2f-eaa0-c55a-d015``. 128 bits make a
    second key with the same fingerprint infeasible to find.
    """
    digest = nacl.hash.blake2b(
        bytes(verify_key), digest_size=_VK_FP_BYTES, person=_VK_FP_PERSON, encoder=RawEncoder
    ).hex()
    groups = [digest[i : i + 4] for i in range(0, len(digest), 4)]
    return VERIFY_KEY_FINGERPRINT_PREFIX + "-".join(groups)


ENDORSEMENT_CONTEXT = b"m8-rotator-key-endorsement-v1\x00"


def _endorsement_message(signing_key_id: str, verify_key: VerifyKey) -> bytes:
    body = {"signing_key_id": signing_key_id, "verify_key": encode_verify_key(verify_key)}
    return ENDORSEMENT_CONTEXT + canonical_json(body)


def endorse(endorser: RotatorSigningKey, signing_key_id: str, verify_key: VerifyKey) -> bytes:
    """The endorser's signature over a successor key, so that clients which pinned the
    endorser can follow a scheduled rotation without trusting anything new on first use."""
    return endorser.signing_key.sign(_endorsement_message(signing_key_id, verify_key)).signature


def endorsement_valid(
    endorser: VerifyKey, signing_key_id: str, verify_key: VerifyKey, signature: bytes
) -> bool:
    """Whether `signature` is the endorser's endorsement of this key."""
    try:
        endorser.verify(_endorsement_message(signing_key_id, verify_key), signature)
    except nacl.exceptions.CryptoError:
        return False
    return True
