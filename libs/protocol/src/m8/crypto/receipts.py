"""Outcome receipts: how m8ctl knows an upload's outcome comes from the reactor that did it.

A reactor signs every outcome it records (upload id, store, path, status, upstream version,
fingerprint, and the SHA-256 of the ciphertext it was asked to store) with a receipt key of
its own. Its verify key is published and pinned like the rotator's, so a compromised API
cannot invent "stored" or a fingerprint. The ciphertext hash binds the receipt to the exact
bytes m8ctl sent: the reactor checks it against the ciphertext it decrypts, so an API that
swapped in a ciphertext of its own gets a receipt that m8ctl's own hash does not match.

Signed bytes::

    b"m8-outcome-receipt-v1\\x00" + canonical_json({"upload_id", "store", "path",
        "status" (stored|rejected|superseded|failed), "upstream_version" (str|null),
        "fingerprint" (str|null), "ciphertext_sha256" (64 lowercase hex)})

Receipt key file (0600, written atomically, refused when group or others may read it)::

    {"type": "m8-receipt-key-v1", "receipt_key_id": "...", "seed": "<b64>",
     "endorsed_by": "...", "endorsement": "<b64>"}   # the last two optional, together

The endorsement is ``endorse(old, receipt_key_id, verify_key, None, kind="receipt")`` by
the key it replaces, so clients that pinned the old key can follow the new one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import nacl.exceptions
from nacl.signing import SigningKey, VerifyKey

from m8.crypto.encoding import b64decode, b64encode, canonical_json, check_text, require_str
from m8.crypto.errors import (
    CryptoError,
    InvalidInput,
    KeyFileError,
    UnknownSigningKey,
)
from m8.crypto.keyfiles import read_private_file, write_private_file
from m8.crypto.signing import RotatorSigningKey, check_signature, endorse

RECEIPT_CONTEXT = b"m8-outcome-receipt-v1\x00"
RECEIPT_KEY_FILE_TYPE = "m8-receipt-key-v1"
# The `kind` of m8.crypto.endorse for receipt keys: a rotator key's endorsement never passes.
RECEIPT_KEY_KIND = "receipt"

ReceiptStatus = Literal["stored", "rejected", "superseded", "failed"]
RECEIPT_STATUSES: frozenset[str] = frozenset(get_args(ReceiptStatus))

# SecretUploadRequested.ciphertext_sha256: lowercase hex SHA-256 of the raw ciphertext bytes.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

_REQUIRED = frozenset({"type", "receipt_key_id", "seed"})
_ENDORSEMENT = frozenset({"endorsed_by", "endorsement"})


def is_sha256_hex(value: object) -> bool:
    """Whether `value` is a SHA-256 as receipts carry it: 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


class UnknownReceiptKey(UnknownSigningKey):
    """The receipt names a receipt_key_id that is not pinned."""

    def __init__(self, receipt_key_id: str) -> None:
        # Not UnknownSigningKey's message: that one speaks of rotator keys.
        CryptoError.__init__(
            self, f"receipt key {receipt_key_id!r} is not among the pinned receipt keys"
        )
        self.signing_key_id = receipt_key_id


@dataclass(frozen=True, slots=True)
class OutcomeReceipt:
    """What a reactor vouches for about the outcome of one upload."""

    upload_id: str
    store: str
    path: str
    status: ReceiptStatus
    upstream_version: str | None
    fingerprint: str | None
    # Lowercase hex SHA-256 of the raw ciphertext bytes (SecretUploadRequested's field).
    ciphertext_sha256: str

    def __post_init__(self) -> None:
        for name in ("upload_id", "store", "path"):
            check_text(getattr(self, name), field=name)
        if self.status not in RECEIPT_STATUSES:
            raise InvalidInput(f"status must be one of {sorted(RECEIPT_STATUSES)}")
        for name in ("upstream_version", "fingerprint"):
            if getattr(self, name) is not None:
                check_text(getattr(self, name), field=name)
        if not is_sha256_hex(self.ciphertext_sha256):
            raise InvalidInput("ciphertext_sha256 must be 64 lowercase hex digits")

    def to_dict(self) -> dict[str, str | None]:
        """The signed fields, JSON-ready."""
        return {
            "upload_id": self.upload_id,
            "store": self.store,
            "path": self.path,
            "status": self.status,
            "upstream_version": self.upstream_version,
            "fingerprint": self.fingerprint,
            "ciphertext_sha256": self.ciphertext_sha256,
        }

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed: context, then canonical JSON."""
        return RECEIPT_CONTEXT + canonical_json(self.to_dict())


@dataclass(frozen=True, slots=True, eq=False)
class ReceiptSigningKey:
    """A reactor's Ed25519 key for outcome receipts, versioned by ``receipt_key_id``.

    It wraps the rotator's key type for its code (id check, generation, endorsement) but is
    not one, so it cannot be passed where a rotator signing key is expected.
    """

    key: RotatorSigningKey

    @classmethod
    def generate(cls, receipt_key_id: str) -> ReceiptSigningKey:
        """A fresh random receipt key."""
        return cls(RotatorSigningKey.generate(receipt_key_id))

    @property
    def receipt_key_id(self) -> str:
        return self.key.signing_key_id

    @property
    def verify_key(self) -> VerifyKey:
        """The public half that reactors register and m8ctl pins."""
        return self.key.verify_key


@dataclass(frozen=True, slots=True, eq=False)
class ReceiptKeyFile:
    """A receipt key as its file holds it, with the older key's endorsement if any."""

    key: ReceiptSigningKey
    endorsed_by: str | None = None
    endorsement: bytes | None = None

    def __post_init__(self) -> None:
        if (self.endorsed_by is None) != (self.endorsement is None):
            raise InvalidInput("endorsed_by and endorsement go together")

    @classmethod
    def successor(cls, key: ReceiptSigningKey, endorser: ReceiptSigningKey) -> ReceiptKeyFile:
        """``key``, endorsed by the receipt key it replaces."""
        signature = endorse(
            endorser.key, key.receipt_key_id, key.verify_key, None, kind=RECEIPT_KEY_KIND
        )
        return cls(key, endorser.receipt_key_id, signature)


def sign_receipt(receipt: OutcomeReceipt, key: ReceiptSigningKey) -> bytes:
    """The receipt key's signature over ``receipt``."""
    return key.key.signing_key.sign(receipt.canonical_bytes()).signature


def verify_receipt(
    receipt: OutcomeReceipt,
    receipt_key_id: str,
    signature: bytes,
    verify_keys: Mapping[str, VerifyKey],
) -> None:
    """Returns if a pinned receipt key signed exactly ``receipt``.

    Raises :class:`UnknownSigningKey` (an :class:`UnknownReceiptKey`) or
    :class:`BadSignature`.
    """
    check_signature(
        verify_keys,
        receipt_key_id,
        receipt.canonical_bytes(),
        signature,
        unknown=UnknownReceiptKey,
        what=f"the outcome of upload {receipt.upload_id!r}",
        signer="receipt key",
    )


def dumps_receipt_key(key_file: ReceiptKeyFile) -> str:
    """The key file text; it holds key material."""
    doc = {
        "type": RECEIPT_KEY_FILE_TYPE,
        "receipt_key_id": key_file.key.receipt_key_id,
        "seed": b64encode(bytes(key_file.key.key.signing_key)),
    }
    if key_file.endorsed_by is not None and key_file.endorsement is not None:
        doc["endorsed_by"] = key_file.endorsed_by
        doc["endorsement"] = b64encode(key_file.endorsement)
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def loads_receipt_key(text: str, *, source: str = "receipt key") -> ReceiptKeyFile:
    """Parse the text of a receipt key file; :class:`KeyFileError` on bad input."""
    try:
        doc = json.loads(text)
    except ValueError:
        # `from None`: the decoder error quotes the document, i.e. the key.
        raise KeyFileError(f"{source} is not a JSON key file") from None
    if not isinstance(doc, dict):
        raise KeyFileError(f"{source} is not a JSON key file")
    if doc.get("type") != RECEIPT_KEY_FILE_TYPE:
        raise KeyFileError(f"{source} is not a {RECEIPT_KEY_FILE_TYPE} key file")
    fields = set(doc)
    if not (fields == _REQUIRED or fields == _REQUIRED | _ENDORSEMENT):
        # Names are not quoted: the file holds key material.
        raise KeyFileError(
            f"{source} must hold {sorted(_REQUIRED - {'type'})}, and optionally both "
            f"{sorted(_ENDORSEMENT)}, nothing else"
        )
    seed = b64decode(doc["seed"], field="seed", error=KeyFileError)
    endorsed = "endorsed_by" in doc
    try:
        key = RotatorSigningKey(
            require_str(doc, "receipt_key_id", error=KeyFileError), SigningKey(seed)
        )
        return ReceiptKeyFile(
            ReceiptSigningKey(key),
            require_str(doc, "endorsed_by", error=KeyFileError) if endorsed else None,
            b64decode(doc["endorsement"], field="endorsement", error=KeyFileError)
            if endorsed
            else None,
        )
    except (nacl.exceptions.CryptoError, InvalidInput):
        raise KeyFileError(f"{source} holds a key of the wrong size or an invalid id") from None


def write_receipt_key_file(
    path: str | os.PathLike[str], key_file: ReceiptKeyFile, *, overwrite: bool = False
) -> Path:
    """Write the key file atomically with mode 0600; :class:`KeyFileExists` if it exists."""
    return write_private_file(path, dumps_receipt_key(key_file), overwrite=overwrite)


def read_receipt_key_file(path: str | os.PathLike[str]) -> ReceiptKeyFile:
    """A receipt key from its file, refused if group or others have any access to it."""
    try:
        text = read_private_file(path).decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not UTF-8 text") from None
    return loads_receipt_key(text, source=str(path))
