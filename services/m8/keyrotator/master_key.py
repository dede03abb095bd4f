"""The rotator's master key, which keeps its signing keys encrypted at rest.

Why this scheme. Every rotator process must sign with the same current key, and the key
must outlive restarts, so it lives in MongoDB; yet the database and its backups are what
docs/security.md expects an attacker to read and even write. So a signing key's seed is
stored only inside a SecretBox (XSalsa20-Poly1305) under a key only the rotator holds:

- a database copy alone yields nothing, and the master key file alone yields nothing;
- authenticated *symmetric* encryption, not a sealed box to a public key, means whoever can
  write the collection cannot plant a signing key of their own: only the master key makes a
  box that opens;
- the signing_key_id is inside the box, so a box cannot be moved under another id;
- a withdrawn key's box is deleted, so a later theft of the master key cannot bring it back
  (short of an old backup, whose statements have long expired).

The master key file is a KEK key file (`m8-kek-v1`, made by `m8 keys generate-master-key`):
m8.crypto.keyfiles already writes it atomically with mode 0600 and refuses it when others
may read it, and its `kek_id` names the master key version recorded beside every box. The
box key is BLAKE2b-256 of its 32 private bytes, personalised, so those bytes never serve
two algorithms.
"""

from __future__ import annotations

import hmac

import nacl.exceptions
import nacl.hash
from nacl.bindings import crypto_sign_SEEDBYTES
from nacl.encoding import RawEncoder
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from m8.crypto import (
    DecryptionFailed,
    Kek,
    KeyFileError,
    KeyIdMismatch,
    RotatorSigningKey,
    loads_kek,
    read_kek_file,
)
from m8.keyrotator.settings import KeyRotatorSettings
from m8.runtime import ConfigurationError

_PERSON = b"m8-rotator-mk-v1"
_CONTEXT = b"m8-rotator-signing-key-v1\x00"


class MasterKey:
    """Encrypts and decrypts the rotator's signing key seeds."""

    def __init__(self, kek: Kek) -> None:
        self.key_id = kek.kek_id
        box_key = nacl.hash.blake2b(
            bytes(kek.private_key),
            digest_size=SecretBox.KEY_SIZE,
            person=_PERSON,
            encoder=RawEncoder,
        )
        self._box = SecretBox(box_key)

    @classmethod
    def from_settings(cls, settings: KeyRotatorSettings) -> MasterKey:
        """The master key from its file or the environment; ConfigurationError if neither."""
        try:
            if settings.keyrotator_master_key is not None:
                return cls(
                    loads_kek(
                        settings.keyrotator_master_key.get_secret_value(),
                        source="M8_KEYROTATOR_MASTER_KEY",
                    )
                )
            if settings.keyrotator_master_key_file is not None:
                return cls(read_kek_file(settings.keyrotator_master_key_file))
        except KeyFileError as exc:
            raise ConfigurationError(str(exc)) from None
        raise ConfigurationError(
            "the key rotator has no master key: run `m8 keys generate-master-key --out FILE` "
            "and set M8_KEYROTATOR_MASTER_KEY_FILE=FILE"
        )

    def seal(self, key: RotatorSigningKey) -> bytes:
        """The key's seed in a box that only this master key opens."""
        plaintext = bytearray(_prefix(key.signing_key_id))
        plaintext += bytes(key.signing_key)
        try:
            return bytes(self._box.encrypt(bytes(plaintext)))
        finally:
            plaintext[:] = bytes(len(plaintext))

    def open(self, signing_key_id: str, sealed: bytes) -> RotatorSigningKey:
        """The signing key in `sealed`; DecryptionFailed or KeyIdMismatch if it was changed."""
        try:
            plaintext = bytearray(self._box.decrypt(sealed))
        except nacl.exceptions.CryptoError:
            raise DecryptionFailed(
                f"signing key {signing_key_id!r} does not open with master key "
                f"{self.key_id!r}: wrong master key, or the stored key was changed"
            ) from None
        prefix = _prefix(signing_key_id)
        try:
            if len(plaintext) != len(prefix) + crypto_sign_SEEDBYTES or not hmac.compare_digest(
                plaintext[: len(prefix)], prefix
            ):
                raise KeyIdMismatch()
            return RotatorSigningKey(signing_key_id, SigningKey(bytes(plaintext[len(prefix) :])))
        finally:
            plaintext[:] = bytes(len(plaintext))


def _prefix(signing_key_id: str) -> bytes:
    return _CONTEXT + signing_key_id.encode("utf-8") + b"\x00"
