"""The client half of the upload protocol (DESIGN section 2, steps 1 to 3).

The value is encrypted here, against a one-time key whose statement a pinned rotator key
signed, so neither the API nor anything behind it can swap keys or read the value.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from nacl.signing import VerifyKey

from m8.client.errors import ClientError, UntrustedKey
from m8.client.profile import PinnedKey, Profile
from m8.client.sdk import M8Client
from m8.crypto import (
    MAX_VALUE_BYTES,
    Binding,
    CryptoError,
    SecretBytes,
    SignedStatement,
    UnknownSigningKey,
    decode_verify_key,
    endorsement_valid,
    new_upload_id,
    seal_envelope,
    verify_key_fingerprint,
    verify_statement,
)


def pinned_keys(profile: Profile) -> dict[str, VerifyKey]:
    """The rotator verify keys this client trusts."""
    return {key_id: decode_verify_key(p.verify_key) for key_id, p in profile.pinned.items()}


def pin_published(profile: Profile, published: Sequence[Mapping[str, Any]]) -> None:
    """Pins every published key: trust on first use, at login or an explicit re-pin."""
    for entry in published:
        verify_key = decode_verify_key(entry["verify_key"])
        profile.pinned[str(entry["signing_key_id"])] = PinnedKey(
            str(entry["verify_key"]), verify_key_fingerprint(verify_key)
        )


def pin_endorsed_keys(profile: Profile, published: Sequence[Mapping[str, Any]]) -> list[str]:
    """Pins published keys that a pinned key endorsed (a scheduled rotation); their ids.

    A key nobody we trust endorsed is never pinned here: that needs `m8ctl login --repin`.
    """
    added: list[str] = []
    progress = True
    while progress:  # a chain of rotations: each new key endorsed by the one before
        progress = False
        trusted = pinned_keys(profile)
        for entry in published:
            key_id = str(entry.get("signing_key_id"))
            if key_id in trusted or not _endorsed(entry, trusted):
                continue
            verify_key = decode_verify_key(entry["verify_key"])
            profile.pinned[key_id] = PinnedKey(
                str(entry["verify_key"]), verify_key_fingerprint(verify_key)
            )
            added.append(key_id)
            progress = True
    return added


def _endorsed(entry: Mapping[str, Any], trusted: Mapping[str, VerifyKey]) -> bool:
    endorser = trusted.get(str(entry.get("endorsed_by")))
    if endorser is None or not entry.get("endorsement"):
        return False
    try:
        signature = base64.b64decode(str(entry["endorsement"]), validate=True)
        verify_key = decode_verify_key(entry["verify_key"])
    except (CryptoError, ValueError):
        return False
    return endorsement_valid(endorser, str(entry["signing_key_id"]), verify_key, signature)


def put_secret(
    client: M8Client, profile: Profile, path: str, store: str | None, value: SecretBytes
) -> dict[str, Any]:
    """Encrypts `value` for a fresh signed upload key and submits it; the API's answer."""
    try:
        signed = SignedStatement.from_dict(client.upload_key(path, store))
    except CryptoError as exc:
        raise UntrustedKey(f"the server sent a malformed upload key ({exc})") from None
    statement = _verified(client, profile, signed)
    if statement.path != path or (store is not None and statement.store_id != store):
        raise UntrustedKey(
            "the server sent an upload key issued for another store or path; nothing was sent"
        )
    upload_id = new_upload_id()
    binding = Binding(upload_id, statement.key_id, statement.store_id, path)
    encrypted = seal_envelope(value, binding, statement.public_key)
    return client.submit(
        {
            "upload_id": upload_id,
            "key_id": statement.key_id,
            "store": statement.store_id,
            "path": path,
            **encrypted.to_dict(),
        }
    )


def _verified(client: M8Client, profile: Profile, signed: SignedStatement) -> Any:
    try:
        return verify_statement(signed, pinned_keys(profile))
    except UnknownSigningKey:
        if pin_endorsed_keys(profile, client.rotator_keys()):
            profile.save()
            return _verified(client, profile, signed)
        raise UntrustedKey(
            f"the upload key is signed by rotator key {signed.signing_key_id!r}, which you "
            "have not pinned and no pinned key endorsed. Nothing was sent. If your operator "
            "confirms its fingerprint, run `m8ctl login --repin`."
        ) from None
    except CryptoError as exc:
        raise UntrustedKey(
            f"the upload key failed verification ({exc}); nothing was sent"
        ) from None


def read_value(source: bytes | bytearray) -> SecretBytes:
    """Wraps raw bytes as a wipeable secret, refusing empty and oversized values."""
    if not source:
        raise ClientError("the secret value is empty; nothing was sent")
    if len(source) > MAX_VALUE_BYTES:
        raise ClientError(f"the secret value is larger than {MAX_VALUE_BYTES} bytes")
    return SecretBytes(source)
