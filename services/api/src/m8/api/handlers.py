"""The API's commands: load the aggregate, call its method, save what it recorded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property

from m8.domain import CATALOG_ID, Secret, StoreCatalog, UploadKey, secret_id
from m8.domain.errors import UnknownUploadKey, UploadAlreadyRequested
from m8.domain.events import SecretUploadRequested
from m8.eventsourcing import (
    ConcurrencyConflict,
    DuplicateRecord,
    Metadata,
    Records,
    Repository,
    Transaction,
)

# Write-side record of every accepted upload id (written in the same transaction as its
# events): what makes a retried request idempotent and a reused upload id a conflict.
UPLOAD_REQUESTS = "upload_requests"


@dataclass(frozen=True)
class UploadCommand:
    """An encrypted upload as checked at the edge (bytes still base64, as they are stored)."""

    upload_id: str
    key_id: str
    client_public_key: str
    nonce: str
    ciphertext: str
    store: str | None
    path: str
    requested_by: str

    @cached_property  # read for the event, the request record and the digest: hash once
    def ciphertext_sha256(self) -> str:
        return hashlib.sha256(base64.b64decode(self.ciphertext)).hexdigest()

    def digest(self) -> str:
        """Identifies the request, so that only its exact repetition counts as a retry."""
        fields = {**asdict(self), "ciphertext": self.ciphertext_sha256}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class Commands:
    """Every change the API makes."""

    def __init__(
        self,
        repository: Repository,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repository = repository
        # The clock of key expiry and of `requested_at` (tests inject their own).
        self.now = now

    async def change_catalog(
        self, change: Callable[[StoreCatalog], None], metadata: Metadata
    ) -> StoreCatalog:
        """Applies `change` to the store catalog (again on a concurrent change)."""
        catalog, _ = await self.repository.update(StoreCatalog, CATALOG_ID, change, metadata)
        return catalog

    async def request_upload(self, command: UploadCommand, metadata: Metadata) -> None:
        """Claims the upload key and records the upload, both or neither.

        The exact same request again changes nothing; the same upload id with anything
        else is UploadAlreadyRequested. A racing twin makes this one run again and find it.
        """

        async def work(transaction: Transaction) -> None:
            requests = transaction.records(UPLOAD_REQUESTS)
            if not await self._already_requested(requests, command):
                await self._record_upload(transaction, requests, command, metadata)

        await self.repository.in_transaction(work)

    async def _already_requested(self, requests: Records, command: UploadCommand) -> bool:
        existing = await requests.get(command.upload_id)
        if existing is None:
            return False
        if hmac.compare_digest(str(existing["digest"]), command.digest()):
            return True
        raise UploadAlreadyRequested(
            f"upload {command.upload_id} was requested already with other content; "
            "make a new upload id for a new upload"
        )

    async def _record_upload(
        self,
        transaction: Transaction,
        requests: Records,
        command: UploadCommand,
        metadata: Metadata,
    ) -> None:
        key = await transaction.load(UploadKey, command.key_id)
        if not key.exists:
            raise UnknownUploadKey(
                f"there is no upload key {command.key_id!r}; ask for one with POST /v1/upload-keys"
            )
        # No store named: the key's own, which was the default when it was issued (the
        # default may have changed since).
        issued_for = key.issued.store if key.issued is not None else None
        catalog = await transaction.load(StoreCatalog, CATALOG_ID)
        store = catalog.target(command.store or issued_for)
        now = self.now()
        key.claim(command.upload_id, store.name, command.path, now)
        secret = await transaction.load(Secret, secret_id(store.name, command.path))
        secret.request_upload(
            SecretUploadRequested(
                upload_id=command.upload_id,
                store=store.name,
                store_type=store.store_type,
                path=command.path,
                key_id=command.key_id,
                client_public_key=command.client_public_key,
                nonce=command.nonce,
                ciphertext=command.ciphertext,
                ciphertext_sha256=command.ciphertext_sha256,
                requested_by=command.requested_by,
            )
        )
        try:
            await requests.insert(
                {
                    "_id": command.upload_id,
                    "digest": command.digest(),
                    "store": store.name,
                    "path": command.path,
                    "key_id": command.key_id,
                    # What the reactor's receipt binds: shown while the upload is pending too.
                    "ciphertext_sha256": command.ciphertext_sha256,
                    "requested_by": command.requested_by,
                    "requested_at": now,
                }
            )
        except DuplicateRecord:
            # A twin with this upload id committed first: run again and answer as it did.
            raise ConcurrencyConflict("upload_request", command.upload_id, 0) from None
        await transaction.save(key, metadata)
        await transaction.save(secret, metadata)
