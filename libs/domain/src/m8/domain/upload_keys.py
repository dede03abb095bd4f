"""One-time upload keys: issued, claimed by exactly one upload, then destroyed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar

from m8.domain.errors import (
    DomainError,
    UploadKeyExpired,
    UploadKeyMismatch,
    UploadKeyUsed,
)
from m8.domain.errors import (
    UploadKeyDestroyed as KeyDestroyedError,
)
from m8.domain.events import UploadKeyClaimed, UploadKeyDestroyed, UploadKeyIssued
from m8.eventsourcing import Aggregate, DomainEvent


class KeyRefusal(StrEnum):
    """Why a key may not serve an upload; the values are the reactor's rejection reasons
    (docs/contracts.md), and the API answers each with its own problem type."""

    DESTROYED = "key_destroyed"
    EXPIRED = "key_expired"
    USED = "key_used"
    BINDING_MISMATCH = "binding_mismatch"


@dataclass(frozen=True)
class KeyRefused:
    """A refusal and what it is about (facts only, no advice)."""

    reason: KeyRefusal
    detail: str


class UploadKey(Aggregate):
    """The public record of a one-time key (its sealed private half lives elsewhere)."""

    aggregate_type: ClassVar[str] = "upload_key"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.issued: UploadKeyIssued | None = None
        self.claimed_by: str | None = None
        self.destroyed: str | None = None

    def apply(self, event: DomainEvent) -> None:
        match event:
            case UploadKeyIssued():
                self.issued = event
            case UploadKeyClaimed(upload_id=upload_id):
                self.claimed_by = upload_id
            case UploadKeyDestroyed(reason=reason):
                self.destroyed = reason

    @property
    def expires_at(self) -> datetime:
        """When the key stops being usable."""
        assert self.issued is not None
        return datetime.fromisoformat(self.issued.expires_at.replace("Z", "+00:00"))

    def issue(self, event: UploadKeyIssued) -> None:
        """Records the issue (once)."""
        if self.issued is None:
            self._record(event)

    def refusal(self, upload_id: str, store: str, path: str, now: datetime) -> KeyRefused | None:
        """Why this key may not serve upload `upload_id` of `path` in `store` at `now`, or
        None if it may: issued for that store and path, unclaimed or claimed by that
        upload, not expired, not destroyed. The one rule the API's claim and the reactor
        share."""
        if self.issued is None:
            return KeyRefused(KeyRefusal.DESTROYED, "the upload key was never issued")
        if self.destroyed == "expired":
            return KeyRefused(KeyRefusal.EXPIRED, "the upload key expired and was destroyed")
        if self.destroyed is not None:
            return KeyRefused(
                KeyRefusal.DESTROYED, f"the upload key was destroyed ({self.destroyed})"
            )
        if (self.issued.store, self.issued.path) != (store, path):
            return KeyRefused(
                KeyRefusal.BINDING_MISMATCH, "the upload key was issued for another store or path"
            )
        if self.claimed_by not in (None, upload_id):
            return KeyRefused(KeyRefusal.USED, "the upload key is claimed by another upload")
        if now >= self.expires_at:
            return KeyRefused(
                KeyRefusal.EXPIRED, f"the upload key expired at {self.issued.expires_at}"
            )
        return None

    def claim(self, upload_id: str, store: str, path: str, now: datetime | None = None) -> None:
        """Binds the key to one upload of `path` in `store`; refuses any other use."""
        refused = self.refusal(upload_id, store, path, now or datetime.now(UTC))
        if refused is not None:
            error, advice = _CLAIM_REFUSALS[refused.reason]
            raise error(advice)
        if self.claimed_by != upload_id:
            self._record(UploadKeyClaimed(self.id, upload_id))

    def destroy(self, reason: str) -> bool:
        """Records the destruction; False if it was destroyed already."""
        if self.destroyed is not None or self.issued is None:
            return False
        self._record(UploadKeyDestroyed(self.id, reason))
        return True


# How the API answers each refusal of a claim (its problem types, docs/contracts.md).
_CLAIM_REFUSALS: dict[KeyRefusal, tuple[type[DomainError], str]] = {
    KeyRefusal.DESTROYED: (KeyDestroyedError, "this upload key was destroyed; ask for a new one"),
    KeyRefusal.EXPIRED: (UploadKeyExpired, "this upload key has expired; ask for a new one"),
    KeyRefusal.USED: (UploadKeyUsed, "this upload key was used already; ask for a new one"),
    KeyRefusal.BINDING_MISMATCH: (
        UploadKeyMismatch,
        "this upload key was issued for another store or path; ask for a new one",
    ),
}
