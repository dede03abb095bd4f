"""What an event's message carries: everything consumers rely on, never a ciphertext."""

from __future__ import annotations

import json

from m8.domain.events import SecretStored, SecretUploadRequested
from m8.eventsourcing import Metadata, StoredEvent
from m8.messaging.broker import event_message

REQUEST = SecretUploadRequested(
    upload_id="u-1",
    store="vault-a",
    store_type="vault",
    path="team/db/password",
    key_id="k-1",
    client_public_key="cHVibGlj",
    nonce="bm9uY2U=",
    ciphertext="Y2lwaGVydGV4dA==",
    ciphertext_sha256="0" * 64,
    requested_by="alice",
)


def test_an_upload_requests_message_carries_no_ciphertext_but_every_other_field() -> None:
    stored = StoredEvent.new("secret", "vault-a:team/db/password", 1, REQUEST, Metadata("a", "c"))

    message = event_message(stored)
    body = json.loads(message.body)

    assert "Y2lwaGVydGV4dA" not in message.body.decode()
    assert body["data"]["ciphertext"] is None  # as the event store has it once redacted
    assert {k: v for k, v in body["data"].items() if k != "ciphertext"} == {
        k: v for k, v in stored.data.items() if k != "ciphertext"
    }
    assert stored.data["ciphertext"] == REQUEST.ciphertext  # the stored event keeps it
    assert (message.message_id, message.type) == (stored.event_id, "SecretUploadRequested")


def test_an_outcomes_message_carries_no_fingerprint() -> None:
    outcome = SecretStored(
        "u-1", "vault-a", "vault", "team/db/password", "3", "fp1:" + "a" * 43, "rk-1", "c2ln"
    )
    stored = StoredEvent.new("secret", "vault-a:team/db/password", 2, outcome, Metadata("a", "c"))

    body = json.loads(event_message(stored).body)

    assert body["data"]["fingerprint"] is None  # an equality oracle: the API's rights apply
    assert body["data"]["receipt_signature"] is None  # it signs the fingerprint: a guess test
    assert body["data"]["upstream_version"] == "3"
    assert stored.data["fingerprint"] == outcome.fingerprint  # the stored event keeps it
