"""One-time upload key pairs and their private halves sealed to a KEK (ADR-3 #SEC1-ENH1)."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import nacl.exceptions
from nacl.public import PrivateKey, SealedBox

from m8.crypto.encoding import b64decode, b64encode, check_text, require_fields, require_str
from m8.crypto.errors import DecryptionFailed, KeyIdMismatch, MalformedEnvelope, UnknownKek
from m8.crypto.kek import Kek, KekPublicKey, KekRing
from m8.crypto.secretbytes import SecretBytes

# The sealed plaintext is CONTEXT || key_id || 0x00 || private key. Binding key_id inside
# the sealed box stops someone with write access to the key collection from moving a
# sealed key under another key_id.
_SEAL_CONTEXT = b"m8-upload-key-v1\x00"
PRIVATE_KEY_BYTES = PrivateKey.SIZE
_SEALED_FIELDS = frozenset({"key_id", "kek_id", "sealed_private_key"})


@dataclass(frozen=True, slots=True, eq=False)
class UploadKeyPair:
    """An X25519 pair for exactly one upload; the rotator makes it and seals its private half."""

    key_id: str
    private_key: PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        check_text(self.key_id, field="key_id")

    @classmethod
    def generate(cls) -> UploadKeyPair:
        """A fresh pair with a new uuid4 ``key_id``."""
        return cls(key_id=str(uuid.uuid4()), private_key=PrivateKey.generate())

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key, as signed in the statement."""
        return bytes(self.private_key.public_key)


@dataclass(frozen=True, slots=True)
class SealedUploadKey:
    """An upload private key sealed to the KEK ``kek_id``; safe to store, never in an event."""

    key_id: str
    kek_id: str
    sealed_private_key: bytes = field(repr=False)

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form, bytes as standard base64."""
        return {
            "key_id": self.key_id,
            "kek_id": self.kek_id,
            "sealed_private_key": b64encode(self.sealed_private_key),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SealedUploadKey:
        """Inverse of :meth:`to_dict`; :class:`MalformedEnvelope` on bad input."""
        data = require_fields(
            data, _SEALED_FIELDS, what="sealed upload key", error=MalformedEnvelope
        )
        return cls(
            key_id=require_str(data, "key_id", error=MalformedEnvelope),
            kek_id=require_str(data, "kek_id", error=MalformedEnvelope),
            sealed_private_key=b64decode(
                data["sealed_private_key"], field="sealed_private_key", error=MalformedEnvelope
            ),
        )


def _sealed_prefix(key_id: str) -> bytes:
    return _SEAL_CONTEXT + key_id.encode("utf-8") + b"\x00"


def seal_upload_key(pair: UploadKeyPair, kek: KekPublicKey) -> SealedUploadKey:
    """Seal the pair's private half to ``kek`` (libsodium sealed box)."""
    plaintext = bytearray(_sealed_prefix(pair.key_id))
    plaintext += bytes(pair.private_key)
    try:
        sealed = SealedBox(kek.public_key).encrypt(bytes(plaintext))
    finally:
        plaintext[:] = bytes(len(plaintext))
    return SealedUploadKey(key_id=pair.key_id, kek_id=kek.kek_id, sealed_private_key=sealed)


def unseal_upload_key(sealed: SealedUploadKey, keks: Kek | KekRing) -> SecretBytes:
    """The 32 private key bytes, wipeable; picks the KEK by ``sealed.kek_id``.

    Raises :class:`UnknownKek`, :class:`DecryptionFailed` or :class:`KeyIdMismatch` when the
    sealed key was made for another key_id.
    """
    kek = keks.get(sealed.kek_id) if isinstance(keks, KekRing) else keks
    if kek.kek_id != sealed.kek_id:
        raise UnknownKek(sealed.kek_id)
    try:
        plaintext = bytearray(SealedBox(kek.private_key).decrypt(sealed.sealed_private_key))
    except nacl.exceptions.CryptoError:
        raise DecryptionFailed("the sealed upload key does not open with its KEK") from None
    prefix = _sealed_prefix(sealed.key_id)
    holder = SecretBytes.adopt(plaintext)
    if len(plaintext) != len(prefix) + PRIVATE_KEY_BYTES or not hmac.compare_digest(
        plaintext[: len(prefix)], prefix
    ):
        holder.wipe()
        raise KeyIdMismatch()
    private = SecretBytes(memoryview(plaintext)[len(prefix) :])
    holder.wipe()
    return private
