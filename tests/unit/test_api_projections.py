"""The API's read models, computed from events alone."""

from __future__ import annotations

from m8.api.projections import SecretsProjection, UploadKeysProjection, upload_documents
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
    uploads = upload_documents(events)

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

    uploads = {doc["_id"]: doc for doc in upload_documents(events)}

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


def key_events(key_id: str, upload_id: str, *ending: DomainEvent) -> list[StoredEvent]:
    return stored_events(
        "upload_key",
        key_id,
        UploadKeyIssued(key_id, "vault-a", "vault", "team/db", "kek-1", "s-1", "2030-01-01T00:00Z"),
        UploadKeyClaimed(key_id, upload_id),
        *ending,
    )


def test_a_pending_upload_whose_key_the_rotator_destroyed_as_expired_is_expired() -> None:
    events = stored_events("secret", SECRET, requested("u1"), requested("u2"), requested("u3"))
    keys = {
        "key-u1": key_events("key-u1", "u1", UploadKeyDestroyed("key-u1", "expired")),
        "key-u2": key_events("key-u2", "u2", UploadKeyDestroyed("key-u2", "used")),
        "key-u3": key_events("key-u3", "u3"),
    }

    uploads = {doc["_id"]: doc for doc in upload_documents(events, keys)}

    assert uploads["u1"]["status"] == "expired"
    assert uploads["u1"]["updated_at"] == keys["key-u1"][-1].recorded_at
    assert uploads["u2"]["status"] == uploads["u3"]["status"] == "pending"


def test_an_outcome_recorded_before_the_key_expired_stays_the_outcome() -> None:
    events = stored_events(
        "secret",
        SECRET,
        requested("u1"),
        SecretUploadRejected("u1", "vault-a", "vault", "team/db", "key_expired", "late"),
    )
    keys = {"key-u1": key_events("key-u1", "u1", UploadKeyDestroyed("key-u1", "expired"))}

    [upload] = upload_documents(events, keys)

    assert upload["status"] == "rejected"
