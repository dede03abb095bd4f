"""The upload read model shows the reactor's receipt of the upload's latest outcome."""

from __future__ import annotations

from m8.api.models import UploadView
from m8.api.projections import upload_documents
from m8.domain.events import SecretStored, SecretStoreFailed, SecretUploadRequested
from m8.eventsourcing import Metadata, StoredEvent

METADATA = Metadata(actor="test", correlation_id="c")
SECRET = "vault-a:team/db"
REQUESTED = SecretUploadRequested(
    "u1", "vault-a", "vault", "team/db", "key-1", "cpk", "n", "ct", "h", "alice"
)


def upload(*outcomes: SecretStored | SecretStoreFailed) -> UploadView:
    events = [
        StoredEvent.new("secret", SECRET, n, event, METADATA)
        for n, event in enumerate((REQUESTED, *outcomes), start=1)
    ]
    [doc] = upload_documents(events)
    fields = {k: v for k, v in doc.items() if k in UploadView.model_fields and k != "_id"}
    return UploadView(upload_id=doc["_id"], **fields)


def test_after_a_re_drive_the_receipt_shown_is_that_of_the_stored_outcome() -> None:
    failed = SecretStoreFailed(
        "u1", "vault-a", "vault", "team/db", "upstream_unavailable", "down", "r-1", "c2ln"
    )
    stored = SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x", "r-2", "c3Rv")

    view = upload(failed, stored)

    assert view.status == "stored"
    assert view.receipt is not None
    assert (view.receipt.receipt_key_id, view.receipt.signature) == ("r-2", "c3Rv")


def test_a_pending_upload_or_an_outcome_recorded_before_receipts_shows_none() -> None:
    assert upload().receipt is None
    assert upload(SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x")).receipt is None


def test_the_view_shows_the_ciphertext_hash_of_the_request_that_the_receipt_binds() -> None:
    stored = SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x", "r-2", "c3Rv")

    assert upload().ciphertext_sha256 == "h"
    assert upload(stored).ciphertext_sha256 == "h"
