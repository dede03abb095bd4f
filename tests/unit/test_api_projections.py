"""The API's read models, computed from events alone."""

from __future__ import annotations

import asyncio

from m8.api.projections import READ_MODELS_VERSION, SCHEMA, UPLOADS, SecretReadModels
from m8.api.read_side import ReadSide
from m8.domain.events import (
    SecretStored,
    SecretUploadRejected,
    SecretUploadRequested,
    SecretUploadSuperseded,
    UploadKeyClaimed,
    UploadKeyDestroyed,
    UploadKeyIssued,
)
from m8.eventsourcing import DomainEvent
from m8.eventsourcing.memory import InMemoryEventRecorder
from tests.unit.projected import METADATA, Projected


def requested(upload_id: str, who: str = "alice") -> SecretUploadRequested:
    return SecretUploadRequested(
        upload_id, "vault-a", "vault", "team/db", f"key-{upload_id}", "cpk", "n", "ct", "h", who
    )


SECRET = "vault-a:team/db"


async def test_the_current_value_is_the_latest_accepted_upload_that_is_stored() -> None:
    projected = Projected()
    events = await projected.record(
        "secret",
        SECRET,
        requested("u1"),
        requested("u2", "bob"),
        requested("u3"),
        SecretStored("u2", "vault-a", "vault", "team/db", "2", "fp1:two"),
        # Written before u2, recorded after it: its reactor died between the two.
        SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:one"),
        SecretUploadRejected("u3", "vault-a", "vault", "team/db", "mac", "bad MAC"),
    )

    secret = projected.secret(SECRET)
    uploads = projected.uploads()

    assert (secret["fingerprint"], secret["upstream_version"]) == ("fp1:two", "2")
    assert secret["stored_by"] == "bob"
    assert secret["stored_at"] == events[3].recorded_at
    assert "history" not in secret  # one small document, however many uploads
    assert [(u["_id"], u["status"], u["requested_at"]) for u in uploads.values()] == [
        ("u1", "stored", events[0].recorded_at),
        ("u2", "stored", events[1].recorded_at),
        ("u3", "rejected", events[2].recorded_at),
    ]
    assert all("ciphertext" not in u for u in uploads.values())


async def test_a_secret_with_nothing_stored_yet_has_no_fingerprint() -> None:
    projected = Projected()
    await projected.record("secret", SECRET, requested("u1"))

    secret = projected.secret(SECRET)

    assert secret["fingerprint"] is secret["stored_at"] is None
    assert (secret["store"], secret["path"]) == ("vault-a", "team/db")


async def test_each_upload_has_its_own_status_document() -> None:
    projected = Projected()
    events = await projected.record(
        "secret",
        SECRET,
        requested("u1"),
        requested("u2"),
        SecretStored("u1", "vault-a", "vault", "team/db", "1", "fp1:x"),
    )

    uploads = projected.uploads()

    assert uploads["u1"]["status"] == "stored"
    assert uploads["u1"]["fingerprint"] == "fp1:x"
    assert uploads["u1"]["updated_at"] == events[2].recorded_at
    assert uploads["u2"]["status"] == "pending"
    assert uploads["u2"]["key_id"] == "key-u2"


async def record_key(projected: Projected, upload_id: str, *ending: DomainEvent) -> None:
    key_id = f"key-{upload_id}"
    await projected.record(
        "upload_key",
        key_id,
        UploadKeyIssued(key_id, "vault-a", "vault", "team/db", "kek-1", "s-1", "2030-01-01T00:00Z"),
        UploadKeyClaimed(key_id, upload_id),
        *ending,
    )


async def test_a_pending_upload_whose_key_the_rotator_destroyed_as_expired_is_expired() -> None:
    projected = Projected()
    await projected.record("secret", SECRET, requested("u1"), requested("u2"), requested("u3"))
    await record_key(projected, "u1", UploadKeyDestroyed("key-u1", "expired"))
    await record_key(projected, "u2", UploadKeyDestroyed("key-u2", "used"))
    await record_key(projected, "u3")
    [*_, destroyed] = await projected.recorder.load("upload_key", "key-u1")

    uploads = projected.uploads()

    assert uploads["u1"]["status"] == "expired"
    assert uploads["u1"]["updated_at"] == destroyed.recorded_at
    assert uploads["u2"]["status"] == uploads["u3"]["status"] == "pending"


async def test_an_outcome_recorded_before_the_key_expired_stays_the_outcome() -> None:
    projected = Projected()
    await projected.record(
        "secret",
        SECRET,
        requested("u1"),
        SecretUploadRejected("u1", "vault-a", "vault", "team/db", "key_expired", "late"),
    )
    await record_key(projected, "u1", UploadKeyDestroyed("key-u1", "expired"))

    assert projected.uploads()["u1"]["status"] == "rejected"


async def test_read_models_an_older_version_left_behind_are_caught_up_once() -> None:
    projected = Projected()
    await projected.record("secret", SECRET, requested("u1"))
    await record_key(projected, "u1")
    # The older version did not project the key's expiry.
    await projected.recorder.append(
        "upload_key", "key-u1", 2, [UploadKeyDestroyed("key-u1", "expired")], METADATA
    )
    assert projected.uploads()["u1"]["status"] == "pending"

    # Replicas starting at once: each may refresh, and the marker is set once.
    refreshed = await asyncio.gather(
        *(SecretReadModels(projected.recorder).catch_up() for _ in range(3))
    )
    again = await SecretReadModels(projected.recorder).catch_up()

    assert projected.uploads()["u1"]["status"] == "expired"
    assert projected.secret(SECRET)["path"] == "team/db"
    assert any(refreshed)
    assert not again
    assert list(projected.recorder.state.collections[SCHEMA]) == [
        f"read_models_v{READ_MODELS_VERSION}"
    ]


async def test_a_superseded_upload_is_shown_so_and_loses_its_ciphertext() -> None:
    recorder = InMemoryEventRecorder()
    woken: list[str] = []
    read_side = ReadSide(recorder, woken.append)
    older = await recorder.append("secret", SECRET, 0, [requested("u-1")], METADATA)
    superseded = SecretUploadSuperseded(
        "u-1", "vault-a", "vault", "team/db", "u-2", "rk-1", "c2lnbmF0dXJl"
    )
    outcome = await recorder.append("secret", SECRET, 1, [superseded], METADATA)

    for message in (*older, *outcome):
        await read_side.handle(message)

    upload = recorder.read_models[UPLOADS]["u-1"]
    assert (upload["status"], upload["reason"]) == ("superseded", "superseded")
    assert upload["receipt"] == {"receipt_key_id": "rk-1", "signature": "c2lnbmF0dXJl"}
    [request, _] = await recorder.load("secret", SECRET)
    assert request.data["ciphertext"] is None
    assert set(woken) == {"u-1"}  # the long-polls of u-1 here are woken
