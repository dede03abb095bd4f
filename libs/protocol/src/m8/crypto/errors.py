"""Exception classes of m8.crypto.

Every message is written so that it can be logged: it names what went wrong and which
identifier was involved, never key material, plaintext or ciphertext.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by m8.crypto."""


class InvalidInput(CryptoError, ValueError):
    """A caller passed an argument that can never be valid (wrong size, naive time, ...)."""


class SecretWiped(CryptoError):
    """The secret was already wiped and can no longer be read."""


class DecryptionFailed(CryptoError):
    """Authenticated decryption failed: wrong key, or the data was changed."""


class MalformedEnvelope(CryptoError):
    """An upload or its decrypted envelope cannot be decoded, or has an unknown version."""


class BindingMismatch(CryptoError):
    """A field inside the authenticated envelope differs from the one the event claims."""

    field: str = "binding"

    def __init__(self) -> None:
        # The values themselves stay out of the message: the envelope's copy is
        # attacker-chosen input and may be long or crafted for log injection.
        super().__init__(f"the envelope's {self.field} does not match the expected {self.field}")


class UploadIdMismatch(BindingMismatch):
    """The envelope was made for another upload."""

    field = "upload_id"


class KeyIdMismatch(BindingMismatch):
    """The envelope or sealed key belongs to another upload key."""

    field = "key_id"


class StoreMismatch(BindingMismatch):
    """The envelope was made for another store."""

    field = "store_id"


class PathMismatch(BindingMismatch):
    """The envelope was made for another path."""

    field = "path"


class UnknownKek(CryptoError):
    """No live KEK has the requested kek_id."""

    def __init__(self, kek_id: str) -> None:
        super().__init__(f"no KEK with kek_id {kek_id!r} is loaded")
        self.kek_id = kek_id


class DuplicateKeyId(CryptoError, ValueError):
    """Two keys of one ring share an id."""


class MalformedStatement(CryptoError):
    """A signed upload key statement cannot be decoded."""


class BadSignature(CryptoError):
    """The statement's signature does not verify: it was changed or signed by another key."""


class UnknownSigningKey(CryptoError):
    """The statement names a signing_key_id that is not pinned."""

    def __init__(self, signing_key_id: str) -> None:
        super().__init__(f"signing key {signing_key_id!r} is not among the pinned rotator keys")
        self.signing_key_id = signing_key_id


class StatementExpired(CryptoError):
    """The upload key statement is past its expires_at."""


class KeyFileError(CryptoError):
    """A key file cannot be written or read."""


class KeyFileExists(KeyFileError, FileExistsError):
    """The key file already exists and overwriting was not asked for."""


class InsecureKeyFile(KeyFileError, PermissionError):
    """A secret key file is readable or writable by group or others."""
