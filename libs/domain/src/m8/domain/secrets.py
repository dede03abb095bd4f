"""A secret at one path of one store, and the uploads to it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from m8.domain.errors import UnknownUpload, UploadAlreadyRequested
from m8.domain.events import (
    SecretStored,
    SecretStoreFailed,
    SecretUploadRejected,
    SecretUploadRequested,
    SecretUploadSuperseded,
)
from m8.eventsourcing import Aggregate, DomainEvent
from m8.protocol.status import FINAL_OUTCOMES, UploadStatus


@dataclass(frozen=True)
class Upload:
    """One upload's state as its Secret's events leave it (never `expired`: that comes from
    its key, see m8.api.projections). `failed` is not final: a re-drive may still store it."""

    upload_id: str
    key_id: str
    requested_by: str
    status: UploadStatus = "pending"
    upstream_version: str | None = None
    fingerprint: str | None = None
    reason: str | None = None
    detail: str | None = None


class Secret(Aggregate):
    """Uploads to one path, in the order they were requested: then stored, rejected,
    superseded or failed."""

    aggregate_type: ClassVar[str] = "secret"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.uploads: dict[str, Upload] = {}

    def apply(self, event: DomainEvent) -> None:
        match event:
            case SecretUploadRequested(upload_id=uid, key_id=key_id, requested_by=who):
                self.uploads[uid] = Upload(uid, key_id, who)
            case SecretStored(upload_id=uid, upstream_version=version, fingerprint=fp):
                self.uploads[uid] = replace(
                    self.uploads[uid], status="stored", upstream_version=version, fingerprint=fp
                )
            case SecretUploadRejected(upload_id=uid, reason=reason, detail=detail):
                self.uploads[uid] = replace(
                    self.uploads[uid], status="rejected", reason=reason, detail=detail
                )
            case SecretUploadSuperseded(upload_id=uid, superseded_by=newer):
                self.uploads[uid] = replace(
                    self.uploads[uid],
                    status="superseded",
                    reason="superseded",
                    detail=f"upload {newer} to the same path was stored first",
                )
            case SecretStoreFailed(upload_id=uid, reason=reason, detail=detail):
                self.uploads[uid] = replace(
                    self.uploads[uid], status="failed", reason=reason, detail=detail
                )

    def upload(self, upload_id: str) -> Upload:
        """The upload `upload_id`, or UnknownUpload."""
        found = self.uploads.get(upload_id)
        if found is None:
            raise UnknownUpload(f"no upload {upload_id!r} for {self.id}")
        return found

    def request_upload(self, event: SecretUploadRequested) -> None:
        """Records a new upload; the same upload id twice is refused."""
        if event.upload_id in self.uploads:
            raise UploadAlreadyRequested(f"upload {event.upload_id!r} exists already")
        self._record(event)

    def record_stored(self, event: SecretStored) -> bool:
        """Records the upstream write; False (no event) if the outcome is already final."""
        return self._settle(event)

    def record_rejected(self, event: SecretUploadRejected) -> bool:
        """Records a refusal; False (no event) if the outcome is already final."""
        return self._settle(event)

    def stored_after(self, upload_id: str) -> str | None:
        """The latest upload requested after `upload_id` that is stored, if any: an older
        value must not be written over it."""
        self.upload(upload_id)  # UnknownUpload if there is none
        order = list(self.uploads)  # a dict keeps the order of the requests
        later = order[order.index(upload_id) + 1 :]
        return next((u for u in reversed(later) if self.uploads[u].status == "stored"), None)

    def record_superseded(self, event: SecretUploadSuperseded) -> bool:
        """Records that a newer upload was stored first; False if the outcome is final."""
        return self._settle(event)

    def record_failed(self, event: SecretStoreFailed) -> bool:
        """Records that upstream kept failing; False if the outcome is already final."""
        return self._settle(event)

    def _settle(
        self,
        event: SecretStored | SecretUploadRejected | SecretUploadSuperseded | SecretStoreFailed,
    ) -> bool:
        current = self.upload(event.upload_id)
        if current.status in FINAL_OUTCOMES:
            return False
        if isinstance(event, SecretStoreFailed) and current.status == "failed":
            return False
        self._record(event)
        return True
