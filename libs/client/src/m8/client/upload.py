"""The client half of the upload protocol (DESIGN section 2, steps 1 to 3).

The value is encrypted here, against a one-time key whose statement a pinned rotator key
signed for the store and path this client chose, so neither the API nor anything behind
it can swap keys, redirect the value or read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from m8.client.errors import ApiError, ClientError, UntrustedKey, UsageError
from m8.client.keys import expire_pins, keys_stale, refresh_keys, utc_now
from m8.client.pins import parse_not_after
from m8.client.profile import Profile
from m8.client.sdk import M8Client
from m8.crypto import (
    MAX_VALUE_BYTES,
    Binding,
    CryptoError,
    SecretBytes,
    SignedStatement,
    UploadKeyStatement,
    decode_verify_key,
    new_upload_id,
    seal_envelope,
    verify_statement,
)


def put_secret(
    client: M8Client,
    profile: Profile,
    path: str,
    store: str | None,
    value: SecretBytes,
    *,
    now: datetime | None = None,
    on_stage: Callable[[str], None] = lambda _stage: None,
) -> dict[str, Any]:
    """Encrypts `value` for a fresh signed upload key and submits it.

    `store` overrides the profile's store; the server never picks one. Returns the API's
    answer with the upload id, store and path this client chose (not the API's echo) and
    the SHA-256 of the ciphertext it sent. `on_stage` hears what it is doing (for a person
    waiting at a terminal).
    """
    now = now or utc_now()
    target = chosen_store(profile, store, "Nothing was sent.")
    expire_pins(profile, now)
    if keys_stale(profile, now):
        refresh_keys(client, profile, now)
    on_stage(f"asking for an upload key for {target}:{path}")
    try:
        answer = client.upload_key(path, target)
    except ApiError as exc:
        if store is None and exc.code in ("store_inactive", "unknown_store"):
            raise _profile_store_gone(target, exc) from None
        raise
    try:
        signed = SignedStatement.from_dict(answer)
    except CryptoError as exc:
        raise UntrustedKey(f"the server sent a malformed upload key ({exc})") from None
    statement = _verified(client, profile, signed, now)
    if statement.store_id != target or statement.path != path:
        raise UntrustedKey(
            f"the server sent an upload key for {statement.store_id}:{statement.path}, but you "
            f"asked for {target}:{path}. Nothing was sent. Something between you and the key "
            "rotator changed the request: tell your operator."
        )
    on_stage("encrypting here, sending")
    upload_id = new_upload_id()
    binding = Binding(upload_id, statement.key_id, target, path)
    encrypted = seal_envelope(value, binding, statement.public_key)
    accepted = client.submit(
        {
            "upload_id": upload_id,
            "key_id": statement.key_id,
            "store": target,
            "path": path,
            **encrypted.to_dict(),
        }
    )
    # The reactor's receipt names the SHA-256 of the ciphertext it stored: compared with
    # this one, it shows that what was stored is what this client encrypted.
    sent = hashlib.sha256(encrypted.ciphertext).hexdigest()
    chosen = {"upload_id": upload_id, "store": target, "path": path, "ciphertext_sha256": sent}
    return {**accepted, **chosen}


def chosen_store(profile: Profile, store: str | None, then: str = "") -> str:
    """`store` (a --store option), else the profile's store; the server's default never."""
    target = store or profile.store
    if target is None:
        raise UsageError(
            "no store chosen: your profile has none. See `m8ctl stores list`, then run "
            f"`m8ctl config set-store NAME` (or pass --store NAME). {then}".rstrip()
        )
    return target


def _profile_store_gone(store: str, exc: ApiError) -> ClientError:
    state = "has been deactivated" if exc.code == "store_inactive" else "no longer exists"
    return ClientError(
        f"your profile's store {store!r} {state} (the server says: {exc.detail}). Nothing was "
        "sent: m8ctl never picks another store by itself. Ask an admin to activate it again, "
        "or choose another one from `m8ctl stores list` with `m8ctl config set-store NAME` "
        "(or pass --store NAME for one upload)."
    )


def _verified(
    client: M8Client, profile: Profile, signed: SignedStatement, now: datetime
) -> UploadKeyStatement:
    pins = profile.rotator_keys
    key_id = signed.signing_key_id
    if key_id not in pins.pinned and key_id not in pins.dropped:
        refresh_keys(client, profile, now)  # a rotation this client has not followed yet
    if key_id in pins.dropped:
        dropped = pins.dropped[key_id]
        raise UntrustedKey(
            f"the upload key is signed by rotator key {key_id!r}, which m8ctl no longer "
            f"trusts: {dropped.reason} (noted {dropped.at}). Nothing was sent. The rotator "
            "should be signing with a newer key: try again in a few minutes, and if this "
            "persists, tell your operator. Only if your operator confirms the fingerprints "
            f"it shows, run `m8ctl login {profile.server} --repin`."
        )
    pin = pins.pinned.get(key_id)
    if pin is None:
        raise UntrustedKey(
            f"the upload key is signed by rotator key {key_id!r}, which you have not pinned "
            "and no pinned key endorsed. Nothing was sent. If your operator confirms its "
            f"fingerprint, run `m8ctl login {profile.server} --repin`."
        )
    try:
        statement = verify_statement(signed, {key_id: decode_verify_key(pin.verify_key)}, now=now)
    except CryptoError as exc:
        raise UntrustedKey(
            f"the upload key failed verification ({exc}); nothing was sent"
        ) from None
    if pin.not_after is not None and statement.expires_at > parse_not_after(pin.not_after):
        raise UntrustedKey(
            f"the upload key is valid until {statement.expires_at:%Y-%m-%d %H:%M:%S}Z, after "
            f"its signing key {key_id!r} ends ({pin.not_after}); the rotator never signs "
            "that. Nothing was sent; tell your operator."
        )
    return statement


def read_value(source: bytes | bytearray) -> SecretBytes:
    """Wraps raw bytes as a wipeable secret, refusing empty and oversized values."""
    if not source:
        raise ClientError("the secret value is empty; nothing was sent")
    if len(source) > MAX_VALUE_BYTES:
        raise ClientError(f"the secret value is larger than {MAX_VALUE_BYTES} bytes")
    return SecretBytes(source)
