"""The API's read models, computed from events alone."""

from __future__ import annotations

from m8.api.projections import SecretsProjection, UploadKeysProjection, UploadsProjection
from m8.domain.events import (
    SecretStored,
    SecretUploadRejected,
    SecretUploadRequested,
    UploadKeyClaimed,
    UploadKeyDestroyed,
    UploadKeyIssued,
)
from m8.eventsourcing import DomainEvent, Metadata, StoredEvent

METADATA = Metadata(actor="test", correlation_id="c")


def stored_events(
    aggregate_type: str, aggregate_id: str, *events: DomainEvent
) -> list[StoredEvent]:
    return [
        StoredEvent.new(aggregate_type, aggregate_id, n, event, METADATA)
        for n, event in enumerate(events, start=1)
    ]


def requested(upload_id: str, who: str = "alice") -> SecretUploadRequested:
    return SecretUploadRequested(
        upload_id, "vault-a", "vault", "team/db", f"key-{upload_id}", "cpk", "n", "ct", "h", who
    )


SECRET = "vault-a:team/db"


def test_the_current_value_is_the_last_one_stored_and_each_upload_keeps_its_outcome() -> None:
    events = stored_events(
        "secret",
        SECRET,
        requested("u1"),
        requested("u2", "bob"),
        requested("u3"),
        SecretStored("u2", "vault-a", "vault", "team/db", "1", "fp1:two"),
        SecretStored("u1", "vault-a", "vault", "team/db", "2", "fp1:one"),
        SecretUploadRejected("u3", "vault-a", "vault", "team/db", "mac", "bad MAC"),
    )

    [secret] = SecretsProjection().project(SECRET, events)
    uploads = UploadsProjection().project(SECRET, events)

    assert (secret["fingerprint"], secret["upstream_version"]) == ("fp1:one", "2")
    assert secret["stored_by"] == "alice"
    assert secret["stored_at"] == events[4].recorded_at
    assert "history" not in secret  # one small document, however many uploads
    assert [(u["_id"], u["status"], u["requested_at"]) for u in uploads] == [
        ("u1", "stored", events[0].recorded_at),
        ("u2", "stored", events[1].recorded_at),
        ("u3", "rejected", events[2].recorded_at),
    ]
    assert all("ciphertext" not in u for u in uploads)


def test_a_secret_with_nothing_stored_yet_has_no_fingerprint() -> None:
    [secret] = SecretsProjection().project(SECRET, stored_events("secret", SECRET, requested("u1")))

    assert secret["fingerprint"] is secret["stored_at"] is None
    assert (secret["store"], secret["path"]) == ("vault-a", "team/db")


def test_each_upload_has_its_own_status_document() -> None:
    events = stored_events(
        "secret",
        SECRET,
        requested("u1"),
        requested("u2"),
        SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x"),
    )

    uploads = {doc["_id"]: doc for doc in UploadsProjection().project(SECRET, events)}

    assert uploads["u1"]["status"] == "stored"
    assert uploads["u1"]["fingerprint"] == "fp1:x"
    assert uploads["u1"]["updated_at"] == events[2].recorded_at
    assert uploads["u2"]["status"] == "pending"
    assert uploads["u2"]["key_id"] == "key-u2"


def test_a_destroyed_key_records_how_it_ended() -> None:
    events = stored_events(
        "upload_key",
        "k1",
        UploadKeyIssued("k1", "vault-a", "vault", "team/db", "kek-1", "s-1", "2030-01-01T00:00Z"),
        UploadKeyClaimed("k1", "u1"),
        UploadKeyDestroyed("k1", "expired"),
    )

    assert UploadKeysProjection().project("k1", events) == [
        {"_id": "k1", "claimed_by": "u1", "destroyed": "expired"}
    ]
