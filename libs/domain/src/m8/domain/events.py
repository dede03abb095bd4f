"""m8's domain events. Versioned; a class for an old version is never removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from m8.eventsourcing import DomainEvent, registry

# --- the store catalog (aggregate type "secret_store") ------------------------------


@registry.register("StoreRegistered")
@dataclass(frozen=True)
class StoreRegistered(DomainEvent):
    """An admin added an upstream store. `config` holds no credential, ever."""

    name: str
    store_type: str
    config: dict[str, Any] = field(default_factory=dict)


@registry.register("StoreActivated")
@dataclass(frozen=True)
class StoreActivated(DomainEvent):
    name: str


@registry.register("StoreDeactivated")
@dataclass(frozen=True)
class StoreDeactivated(DomainEvent):
    name: str


@registry.register("DefaultStoreChanged")
@dataclass(frozen=True)
class DefaultStoreChanged(DomainEvent):
    name: str
    previous: str | None = None


# --- secrets (aggregate type "secret", one per store and path) -----------------------


@dataclass(frozen=True)
class _SecretEvent(DomainEvent):
    upload_id: str
    store: str
    store_type: str
    path: str

    def routing_suffix(self) -> str | None:
        # Reactors bind by store type: `secret.secret_upload_requested.vault`.
        return self.store_type


@registry.register("SecretUploadRequested")
@dataclass(frozen=True)
class SecretUploadRequested(_SecretEvent):
    """A user sent an encrypted value. The ciphertext is redacted once the key is gone."""

    key_id: str
    client_public_key: str
    nonce: str
    ciphertext: str | None
    ciphertext_sha256: str
    requested_by: str


@registry.register("SecretStored")
@dataclass(frozen=True)
class SecretStored(_SecretEvent):
    upstream_version: str
    fingerprint: str
    # The reactor's signature over the outcome (m8.crypto.receipts); None in old events.
    receipt_key_id: str | None = None
    receipt_signature: str | None = None


@registry.register("SecretUploadRejected")
@dataclass(frozen=True)
class SecretUploadRejected(_SecretEvent):
    """Refused for good (bad MAC, binding mismatch, used or expired key, ...)."""

    reason: str
    detail: str
    # The reactor's signature over the outcome (m8.crypto.receipts); None in old events.
    receipt_key_id: str | None = None
    receipt_signature: str | None = None


@registry.register("SecretUploadSuperseded")
@dataclass(frozen=True)
class SecretUploadSuperseded(_SecretEvent):
    """Not written upstream: an upload to the same path requested after it was stored
    first (`superseded_by`), and an older value must never overwrite a newer one."""

    superseded_by: str
    # The reactor's signature over the outcome (m8.crypto.receipts).
    receipt_key_id: str | None = None
    receipt_signature: str | None = None


@registry.register("SecretStoreFailed")
@dataclass(frozen=True)
class SecretStoreFailed(_SecretEvent):
    """Upstream kept failing; the message waits in the dead-letter queue for a re-drive."""

    reason: str
    detail: str
    # The reactor's signature over the outcome (m8.crypto.receipts); None in old events.
    receipt_key_id: str | None = None
    receipt_signature: str | None = None


# --- upload keys (aggregate type "upload_key", one per key id) ---------------------


@registry.register("UploadKeyIssued")
@dataclass(frozen=True)
class UploadKeyIssued(DomainEvent):
    """The rotator issued a one-time key. No private material here: it is sealed aside."""

    key_id: str
    store: str
    store_type: str
    path: str
    kek_id: str
    signing_key_id: str
    expires_at: str

    def on_bus(self) -> bool:
        # The key's statement goes to the client in the RPC answer; no consumer needs this.
        return False


@registry.register("UploadKeyClaimed")
@dataclass(frozen=True)
class UploadKeyClaimed(DomainEvent):
    """An upload took the key; no other upload may use it."""

    key_id: str
    upload_id: str

    def on_bus(self) -> bool:
        # Recorded with its SecretUploadRequested, which is what the reactors consume.
        return False


@registry.register("UploadKeyDestroyed")
@dataclass(frozen=True)
class UploadKeyDestroyed(DomainEvent):
    """The sealed private key is deleted: the upload's ciphertext is unreadable for good."""

    key_id: str
    reason: str  # used | rejected | superseded | expired

    def on_bus(self) -> bool:
        # After a final outcome the API has redacted and projected the upload already; only
        # an expiry changes an upload (it may still be pending, its ciphertext still there).
        return self.reason == "expired"
