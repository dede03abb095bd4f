"""The key rotator's Ed25519 signing keys and how their public halves are shown and pinned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import nacl.exceptions
import nacl.hash
from nacl.encoding import RawEncoder
from nacl.signing import SigningKey, VerifyKey

from m8.crypto.encoding import b64decode, b64encode, canonical_json, check_text, format_utc
from m8.crypto.errors import BadSignature, InvalidInput, UnknownSigningKey

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


# Which kind of key a self signature or endorsement speaks about goes into the signed
# context, so a rotator key's endorsement can never pass as a receipt key's (or the reverse).
KEY_KINDS = frozenset({"rotator", "receipt"})


def _key_message(
    purpose: str, kind: str, signing_key_id: str, verify_key: VerifyKey, not_after: datetime | None
) -> bytes:
    if kind not in KEY_KINDS:
        raise InvalidInput(f"key kind must be one of {sorted(KEY_KINDS)}")
    check_text(signing_key_id, field="signing_key_id")
    body = {
        "signing_key_id": signing_key_id,
        "verify_key": encode_verify_key(verify_key),
        "not_after": None if not_after is None else format_utc(not_after),
    }
    return f"m8-{kind}-{purpose}\x00".encode("ascii") + canonical_json(body)


def _signature_valid(
    verify_key: VerifyKey,
    purpose: str,
    kind: str,
    key_fields: tuple[str, VerifyKey, datetime | None],
    signature: bytes,
) -> bool:
    if kind not in KEY_KINDS:  # a caller's mistake, not bad input: say so
        raise InvalidInput(f"key kind must be one of {sorted(KEY_KINDS)}")
    try:
        # Published fields come from the network: a malformed id is simply not valid.
        verify_key.verify(_key_message(purpose, kind, *key_fields), signature)
    except (nacl.exceptions.CryptoError, InvalidInput, ValueError, TypeError):
        return False
    return True


def key_self_signature(
    key: RotatorSigningKey, not_after: datetime | None, kind: str = "rotator"
) -> bytes:
    """The key's own signature over its id, public half and ``not_after``.

    It binds ``not_after`` to the key itself: whoever holds only a published copy cannot
    extend a key's life, and a client can check the date before trusting it.
    """
    message = _key_message("key-v1", kind, key.signing_key_id, key.verify_key, not_after)
    return key.signing_key.sign(message).signature


def key_self_signature_valid(
    verify_key: VerifyKey,
    signing_key_id: str,
    not_after: datetime | None,
    signature: bytes,
    kind: str = "rotator",
) -> bool:
    """Whether `signature` is this key's self signature over exactly this id and date."""
    key_fields = (signing_key_id, verify_key, not_after)
    return _signature_valid(verify_key, "key-v1", kind, key_fields, signature)


def endorse(
    endorser: RotatorSigningKey,
    signing_key_id: str,
    verify_key: VerifyKey,
    not_after: datetime | None,
    kind: str = "rotator",
) -> bytes:
    """The endorser's signature over a successor key and its ``not_after``, so that clients
    which pinned the endorser can follow a scheduled rotation without trusting anything new
    on first use, and cannot be handed a successor that lives longer than was signed."""
    message = _key_message("key-endorsement-v2", kind, signing_key_id, verify_key, not_after)
    return endorser.signing_key.sign(message).signature


def endorsement_valid(
    endorser: VerifyKey,
    signing_key_id: str,
    verify_key: VerifyKey,
    not_after: datetime | None,
    signature: bytes,
    kind: str = "rotator",
) -> bool:
    """Whether `signature` is the endorser's endorsement of exactly this key and date."""
    key_fields = (signing_key_id, verify_key, not_after)
    return _signature_valid(endorser, "key-endorsement-v2", kind, key_fields, signature)


SIGNATURE_BYTES = 64


def check_signature(
    verify_keys: Mapping[str, VerifyKey],
    key_id: str,
    message: bytes,
    signature: bytes,
    *,
    unknown: type[UnknownSigningKey],
    what: str,
    signer: str,
) -> None:
    """Returns if the pinned key `key_id` signed exactly `message`.

    Raises `unknown(key_id)` for a key not in `verify_keys`, :class:`BadSignature` otherwise;
    `what` and `signer` name the signed thing and the kind of key in that message.
    """
    verify_key = verify_keys.get(key_id)
    if verify_key is None:
        raise unknown(key_id)
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignature(f"a signature is {SIGNATURE_BYTES} bytes")
    try:
        verify_key.verify(message, signature)
    except nacl.exceptions.CryptoError:
        raise BadSignature(f"{what} is not signed by {signer} {key_id!r}") from None
