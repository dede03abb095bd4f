"""One-time upload keys: issued, claimed by exactly one upload, then destroyed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from m8.domain.errors import (
    UploadKeyDestroyed as KeyDestroyedError,
)
from m8.domain.errors import (
    UploadKeyExpired,
    UploadKeyMismatch,
    UploadKeyUsed,
)
from m8.domain.events import UploadKeyClaimed, UploadKeyDestroyed, UploadKeyIssued
from m8.eventsourcing import Aggregate, DomainEvent


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

    def claim(self, upload_id: str, store: str, path: str, now: datetime | None = None) -> None:
        """Binds the key to one upload of `path` in `store`; refuses any other use."""
        if self.issued is None:
            raise UploadKeyMismatch("this upload key was never issued")
        if self.destroyed is not None:
            raise KeyDestroyedError("this upload key was destroyed; ask for a new one")
        if (self.issued.store, self.issued.path) != (store, path):
            raise UploadKeyMismatch(
                "this upload key was issued for another store or path; ask for a new one"
            )
        if self.claimed_by == upload_id:
            return
        if self.claimed_by is not None:
            raise UploadKeyUsed("this upload key was used already; ask for a new one")
        if (now or datetime.now(UTC)) >= self.expires_at:
            raise UploadKeyExpired("this upload key has expired; ask for a new one")
        self._record(UploadKeyClaimed(self.id, upload_id))

    def destroy(self, reason: str) -> bool:
        """Records the destruction; False if it was destroyed already."""
        if self.destroyed is not None or self.issued is None:
            return False
        self._record(UploadKeyDestroyed(self.id, reason))
        return True
