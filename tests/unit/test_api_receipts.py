"""The upload read model shows the reactor's receipt of the upload's latest outcome."""

from __future__ import annotations

from m8.api.models import UploadView
from m8.domain.events import SecretStored, SecretStoreFailed, SecretUploadRequested
from tests.unit.projected import Projected

SECRET = "vault-a:team/db"
REQUESTED = SecretUploadRequested(
    "u1", "vault-a", "vault", "team/db", "key-1", "cpk", "n", "ct", "h", "alice"
)


async def upload(*outcomes: SecretStored | SecretStoreFailed) -> UploadView:
    projected = Projected()
    await projected.record("secret", SECRET, REQUESTED, *outcomes)
    [doc] = projected.uploads().values()
    fields = {k: v for k, v in doc.items() if k in UploadView.model_fields and k != "_id"}
    return UploadView(upload_id=doc["_id"], **fields)


async def test_after_a_re_drive_the_receipt_shown_is_that_of_the_stored_outcome() -> None:
    failed = SecretStoreFailed(
        "u1", "vault-a", "vault", "team/db", "upstream_unavailable", "down", "r-1", "c2ln"
    )
    stored = SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x", "r-2", "c3Rv")

    view = await upload(failed, stored)

    assert view.status == "stored"
    assert view.receipt is not None
    assert (view.receipt.receipt_key_id, view.receipt.signature) == ("r-2", "c3Rv")


async def test_a_pending_upload_or_an_outcome_recorded_before_receipts_shows_none() -> None:
    assert (await upload()).receipt is None
    stored = SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x")
    assert (await upload(stored)).receipt is None


async def test_the_view_shows_the_ciphertext_hash_of_the_request_that_the_receipt_binds() -> None:
    stored = SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x", "r-2", "c3Rv")

    assert (await upload()).ciphertext_sha256 == "h"
    assert (await upload(stored)).ciphertext_sha256 == "h"
