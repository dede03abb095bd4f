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

Rotating the master key without downtime: a rotator loads several (`MasterKeys`, newest
first), seals new seeds under the newest and opens each stored seed with the key its
`master_key_id` names, so `m8 keys rotate-master-key` can re-seal the stored seeds one by
one while rotators keep running; then the old key is dropped from the settings.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

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


class MasterKeys:
    """The master keys a rotator holds: the newest seals, any of them opens."""

    def __init__(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise ConfigurationError("the key rotator needs at least one master key")
        self.newest = keys[0]
        self._by_id: dict[str, MasterKey] = {}
        for key in keys:
            if key.key_id in self._by_id:
                raise ConfigurationError(
                    f"master key {key.key_id!r} is listed twice in "
                    "M8_KEYROTATOR_MASTER_KEY_FILES: list each key once, newest first"
                )
            self._by_id[key.key_id] = key

    @property
    def key_ids(self) -> list[str]:
        """The loaded keys' ids, newest first."""
        return list(self._by_id)

    def get(self, key_id: str) -> MasterKey | None:
        """The loaded master key with this id, if any."""
        return self._by_id.get(key_id)

    @classmethod
    def from_settings(cls, settings: KeyRotatorSettings) -> MasterKeys:
        """The master keys from their files or the environment; ConfigurationError if none,
        or if more than one of the three settings is set (which would be newest is unclear)."""
        given = [
            name
            for name, value in (
                ("M8_KEYROTATOR_MASTER_KEY_FILES", settings.keyrotator_master_key_files),
                ("M8_KEYROTATOR_MASTER_KEY_FILE", settings.keyrotator_master_key_file),
                ("M8_KEYROTATOR_MASTER_KEY", settings.keyrotator_master_key),
            )
            if value
        ]
        if len(given) > 1:
            raise ConfigurationError(
                f"set only one of {' and '.join(given)}: to rotate the master key, list the "
                "new and the old file in M8_KEYROTATOR_MASTER_KEY_FILES (newest first) and "
                "unset the others"
            )
        try:
            if settings.keyrotator_master_key is not None:
                text = settings.keyrotator_master_key.get_secret_value()
                return cls([MasterKey(loads_kek(text, source="M8_KEYROTATOR_MASTER_KEY"))])
            files = settings.keyrotator_master_key_files or [
                path for path in [settings.keyrotator_master_key_file] if path is not None
            ]
            if files:
                return cls([MasterKey(read_kek_file(path)) for path in files])
        except KeyFileError as exc:
            raise ConfigurationError(str(exc)) from None
        raise ConfigurationError(
            "the key rotator has no master key: run `m8 keys generate-master-key --out FILE` "
            "and set M8_KEYROTATOR_MASTER_KEY_FILE=FILE"
        )
