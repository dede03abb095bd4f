"""The upload envelope: what m8ctl encrypts to the one-time upload key (DESIGN 2, step 2).

The envelope ``{v, upload_id, key_id, store_id, path, value, created_at}`` is canonical JSON
encrypted with ``Box(client_sk, upload_pk)``. Because the binding fields travel inside the
authenticated ciphertext, nobody between m8ctl and the reactor can replay a ciphertext
for another upload, key, store or path without the reactor noticing.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import nacl.exceptions
import nacl.utils
from nacl.bindings.crypto_box import crypto_box_MACBYTES
from nacl.public import Box, PrivateKey, PublicKey

from m8.crypto.encoding import (
    b64decode,
    b64encode,
    canonical_json,
    check_text,
    format_utc,
    parse_utc,
    require_fields,
    require_str,
)
from m8.crypto.errors import (
    BindingMismatch,
    DecryptionFailed,
    InvalidInput,
    KeyIdMismatch,
    MalformedEnvelope,
    PathMismatch,
    StoreMismatch,
    UploadIdMismatch,
)
from m8.crypto.secretbytes import SecretBytes

ENVELOPE_VERSION = 1
# AWS Secrets Manager's limit; the smallest of the stores m8 writes to.
MAX_VALUE_BYTES = 64 * 1024
PUBLIC_KEY_BYTES = PublicKey.SIZE
NONCE_BYTES = Box.NONCE_SIZE
_MAC_BYTES = crypto_box_MACBYTES

_ENVELOPE_FIELDS = frozenset(
    {"v", "upload_id", "key_id", "store_id", "path", "value", "created_at"}
)
_UPLOAD_FIELDS = frozenset({"client_public_key", "nonce", "ciphertext"})
# X25519 ignores the top bit of a public key and reduces values >= p, so several byte
# strings name the same key. Accepting only the canonical one makes every changed byte of
# client_public_key a rejected upload instead of an equivalent one.
_X25519_P = 2**255 - 19


def new_upload_id() -> str:
    """A fresh client-side upload id (uuid4)."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Binding:
    """What an envelope is for; the reactor compares it with the event's copy."""

    upload_id: str
    key_id: str
    store_id: str
    path: str

    def __post_init__(self) -> None:
        for name in ("upload_id", "key_id", "store_id", "path"):
            check_text(getattr(self, name), field=name)


@dataclass(frozen=True, slots=True)
class EncryptedUpload:
    """What m8ctl sends and the event stores: no plaintext, no key that opens it."""

    client_public_key: bytes
    nonce: bytes
    ciphertext: bytes

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form, bytes as standard base64."""
        return {
            "client_public_key": b64encode(self.client_public_key),
            "nonce": b64encode(self.nonce),
            "ciphertext": b64encode(self.ciphertext),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> EncryptedUpload:
        """Inverse of :meth:`to_dict`; :class:`MalformedEnvelope` on bad input."""
        data = require_fields(
            data, _UPLOAD_FIELDS, what="encrypted upload", error=MalformedEnvelope
        )
        upload = cls(
            client_public_key=b64decode(
                data["client_public_key"], field="client_public_key", error=MalformedEnvelope
            ),
            nonce=b64decode(data["nonce"], field="nonce", error=MalformedEnvelope),
            ciphertext=b64decode(data["ciphertext"], field="ciphertext", error=MalformedEnvelope),
        )
        upload.check_shape()
        return upload

    def check_shape(self) -> None:
        """Raise :class:`MalformedEnvelope` unless key and nonce sizes are right."""
        if len(self.client_public_key) != PUBLIC_KEY_BYTES:
            raise MalformedEnvelope(f"client_public_key must be {PUBLIC_KEY_BYTES} bytes")
        if len(self.nonce) != NONCE_BYTES:
            raise MalformedEnvelope(f"nonce must be {NONCE_BYTES} bytes")
        if len(self.ciphertext) < _MAC_BYTES:
            raise MalformedEnvelope("ciphertext is shorter than its MAC")


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """A decrypted, binding-checked envelope; use ``with`` so the value gets wiped."""

    binding: Binding
    value: SecretBytes
    created_at: datetime

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.value.wipe()


def seal_envelope(
    value: bytes | bytearray | SecretBytes,
    binding: Binding,
    upload_public_key: PublicKey | bytes,
    *,
    created_at: datetime | None = None,
) -> EncryptedUpload:
    """Encrypt ``value`` for the upload key with a throwaway client key pair (ADR-3 #SEC1)."""
    raw = value.view() if isinstance(value, SecretBytes) else value
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidInput(f"a secret value may be at most {MAX_VALUE_BYTES} bytes")
    if isinstance(upload_public_key, bytes):
        if len(upload_public_key) != PUBLIC_KEY_BYTES:
            raise InvalidInput(f"the upload public key must be {PUBLIC_KEY_BYTES} bytes")
        upload_public_key = PublicKey(upload_public_key)
    envelope = {
        "v": ENVELOPE_VERSION,
        "upload_id": binding.upload_id,
        "key_id": binding.key_id,
        "store_id": binding.store_id,
        "path": binding.path,
        "value": b64encode(raw),
        "created_at": format_utc(created_at or datetime.now(UTC)),
    }
    # The client key lives only inside this call: nobody, m8ctl included, can decrypt later.
    client_key = PrivateKey.generate()
    nonce = nacl.utils.random(NONCE_BYTES)
    ciphertext = Box(client_key, upload_public_key).encrypt(canonical_json(envelope), nonce)
    return EncryptedUpload(
        client_public_key=bytes(client_key.public_key),
        nonce=nonce,
        ciphertext=ciphertext.ciphertext,
    )


def open_envelope(
    encrypted: EncryptedUpload,
    upload_private_key: SecretBytes | PrivateKey,
    expected: Binding,
) -> OpenedEnvelope:
    """Decrypt and check the binding against ``expected`` (the event's fields).

    Raises :class:`DecryptionFailed` on any tampering, :class:`MalformedEnvelope` for
    content that does not decode or has another version, and one :class:`BindingMismatch`
    subclass per differing field.
    """
    encrypted.check_shape()
    if int.from_bytes(encrypted.client_public_key, "little") >= _X25519_P:
        raise DecryptionFailed("the client public key is not canonical; the upload was altered")
    if isinstance(upload_private_key, SecretBytes):
        upload_private_key = PrivateKey(upload_private_key.reveal())
    try:
        box = Box(upload_private_key, PublicKey(encrypted.client_public_key))
        plaintext = box.decrypt(encrypted.ciphertext, encrypted.nonce)
    except nacl.exceptions.CryptoError:
        # Also covers low-order client keys, which libsodium refuses outright.
        raise DecryptionFailed("the upload does not decrypt with its upload key") from None
    return _parse_envelope(plaintext, expected)


def _parse_envelope(plaintext: bytes, expected: Binding) -> OpenedEnvelope:
    # Every error here is raised `from None`: json and base64 errors quote their input,
    # and here the input is the plaintext.
    try:
        decoded = json.loads(plaintext)
    except (ValueError, RecursionError):
        raise MalformedEnvelope("the decrypted envelope is not UTF-8 JSON") from None
    del plaintext
    if not isinstance(decoded, dict) or decoded.get("v") != ENVELOPE_VERSION:
        raise MalformedEnvelope(f"only envelope version {ENVELOPE_VERSION} is understood")
    if type(decoded["v"]) is not int:  # True == 1 in Python
        raise MalformedEnvelope(f"only envelope version {ENVELOPE_VERSION} is understood")
    data = require_fields(decoded, _ENVELOPE_FIELDS, what="envelope", error=MalformedEnvelope)
    try:
        found = Binding(
            upload_id=require_str(data, "upload_id", error=MalformedEnvelope),
            key_id=require_str(data, "key_id", error=MalformedEnvelope),
            store_id=require_str(data, "store_id", error=MalformedEnvelope),
            path=require_str(data, "path", error=MalformedEnvelope),
        )
    except InvalidInput:
        raise MalformedEnvelope("the envelope's binding fields are not valid text") from None
    check_binding(found, expected)
    created_at = parse_utc(data["created_at"], field="created_at", error=MalformedEnvelope)
    value = SecretBytes(b64decode(data["value"], field="value", error=MalformedEnvelope))
    decoded.clear()
    if len(value) > MAX_VALUE_BYTES:
        value.wipe()
        raise MalformedEnvelope(f"the value is larger than {MAX_VALUE_BYTES} bytes")
    return OpenedEnvelope(binding=found, value=value, created_at=created_at)


_CHECKS: tuple[tuple[str, type[BindingMismatch]], ...] = (
    ("upload_id", UploadIdMismatch),
    ("key_id", KeyIdMismatch),
    ("store_id", StoreMismatch),
    ("path", PathMismatch),
)


def check_binding(found: Binding, expected: Binding) -> None:
    """Raise the :class:`BindingMismatch` subclass of the first differing field."""
    for name, error in _CHECKS:
        # Constant time: these are not secrets, but timing should not reveal how much
        # of a guessed id matched.
        if not hmac.compare_digest(
            getattr(found, name).encode("utf-8"), getattr(expected, name).encode("utf-8")
        ):
            raise error()
