"""How an adapter writes an upload's fingerprint into upstream metadata, and reads it back.

Reactors need the fingerprint upstream: after a delivery wrote the value and died before
recording SecretStored, its redelivery finds the key gone and records the outcome from
what it wrote upstream (reactor.py, `_written_before`). But a plain fingerprint there is
an equality oracle for whoever can read the store's metadata: two secrets with one
fingerprint hold one value, also across stores and paths that reader may not see.

So by default (a store's `fingerprint_in_metadata` is false) the mark is sealed: a
SecretBox (XSalsa20-Poly1305, random nonce) under a key derived from the reactors'
fingerprint key (BLAKE2b, person ``m8-fp-seal-v1``), holding the upload id and the
fingerprint, written as ``fps1:`` + unpadded base64url (171 characters, within an AWS
tag's 256). Random nonces make two marks of one value differ, so marks compare nothing;
only a reactor opens them, and only for the upload they were made for, so a mark copied
to another secret recovers nothing. A store set to show fingerprints gets them plain
(``fp1:``), as m8 wrote them before. Plain marks are read only in such a store: in a
sealed one, whoever can write the store's metadata could otherwise choose the fingerprint
that a recovery records (and the receipt vouches for); sealed marks are read everywhere.
"""

from __future__ import annotations

import base64
import binascii
import hmac

import nacl.exceptions
import nacl.hash
from nacl.encoding import RawEncoder
from nacl.secret import SecretBox

from m8.crypto import FingerprintKey
from m8.crypto.encoding import urlsafe_b64encode_unpadded
from m8.crypto.fingerprint import FINGERPRINT_PREFIX

SEALED_PREFIX = "fps1:"
_PERSON = b"m8-fp-seal-v1"


def _seal_key(fingerprint_key: FingerprintKey) -> bytes:
    """The sealing key: a one-way function of the fingerprint key, for this use only."""
    key: bytes = nacl.hash.blake2b(
        b"",
        digest_size=SecretBox.KEY_SIZE,
        key=fingerprint_key.key,
        person=_PERSON,
        encoder=RawEncoder,
    )
    return key


class FingerprintMarks:
    """A store's way of marking fingerprints upstream: sealed, or in clear when it says so."""

    def __init__(self, fingerprint_key: FingerprintKey | None, *, in_clear: bool) -> None:
        if fingerprint_key is None and not in_clear:
            raise ValueError("sealing fingerprints needs the fingerprint key")
        self.in_clear = in_clear
        self._box = SecretBox(_seal_key(fingerprint_key)) if fingerprint_key else None

    def __repr__(self) -> str:
        return f"FingerprintMarks(in_clear={self.in_clear})"

    def mark(self, fingerprint: str, upload_id: str) -> str:
        """What goes into the metadata for `upload_id`'s `fingerprint`."""
        if self.in_clear:
            return fingerprint
        assert self._box is not None  # __init__ ensures it
        sealed = self._box.encrypt(f"{upload_id}\n{fingerprint}".encode())
        return SEALED_PREFIX + urlsafe_b64encode_unpadded(bytes(sealed))

    def read(self, mark: str | None, upload_id: str) -> str | None:
        """The fingerprint a mark holds for `upload_id`; None when it holds none m8 can trust."""
        if not mark:
            return None
        if mark.startswith(FINGERPRINT_PREFIX):
            # Anyone who writes upstream metadata can write this: trusted only where m8
            # writes fingerprints in clear itself.
            return mark if self.in_clear else None
        if not mark.startswith(SEALED_PREFIX) or self._box is None:
            return None
        encoded = mark.removeprefix(SEALED_PREFIX)
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            upload, _, fingerprint = self._box.decrypt(raw).decode("utf-8").partition("\n")
        except (binascii.Error, ValueError, nacl.exceptions.CryptoError):
            return None
        if not hmac.compare_digest(upload.encode(), upload_id.encode()):
            return None
        return fingerprint if fingerprint.startswith(FINGERPRINT_PREFIX) else None
