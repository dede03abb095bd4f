"""POST /v1/secrets: checks, one transaction, idempotency; and following the upload."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from m8.api.projections import UPLOADS
from m8.api.settled import SettledUploads
from m8.devservices import Services
from m8.domain import secret_id
from m8.domain.events import SecretStored, SecretUploadRejected
from m8.eventstore.mongo import from_document
from m8.reactors import path_leases
from tests.servers import Broker
from tests.support.api import (
    AWS_STORE,
    VAULT_STORE,
    RunningApi,
    api_with_rotator,
)
from tests.support.events import eventually

PATH = "team-a/db/password"


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with api_with_rotator(broker, services, mongo_db_name, tmp_path) as running:
        await running.add_store(VAULT_STORE)
        yield running


async def _events(api: RunningApi, aggregate_type: str, aggregate_id: str) -> list[str]:
    return [e.event_type for e in await api.recorder.load(aggregate_type, aggregate_id)]


async def test_an_upload_is_accepted_once_with_its_key_claimed_in_the_same_write(
    api: RunningApi,
) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(key)

    response = await api.call("POST", "/v1/secrets", who="alice", json=body)

    assert response.status_code == 202
    upload_id = body["upload_id"]
    assert response.json() == {
        "upload_id": upload_id,
        "status": "pending",
        "status_url": f"/v1/uploads/{upload_id}",
    }
    assert await _events(api, "upload_key", key.key_id) == ["UploadKeyIssued", "UploadKeyClaimed"]
    [requested] = await api.recorder.load("secret", secret_id("vault-a", PATH))
    assert requested.data["ciphertext"] == body["ciphertext"]
    assert requested.data["ciphertext_sha256"] == (
        hashlib.sha256(base64.b64decode(body["ciphertext"])).hexdigest()
    )
    assert requested.data["requested_by"] == "alice"
    status = await api.call("GET", response.json()["status_url"], who="alice")
    assert status.status_code == 200
    assert status.json()["status"] == "pending"


async def test_the_default_store_takes_an_upload_that_names_none(api: RunningApi) -> None:
    key = await api.issue_key(None, PATH)
    body = api.upload_body(key)
    del body["store"]

    response = await api.call("POST", "/v1/secrets", json=body)

    assert response.status_code == 202
    assert await _events(api, "secret", secret_id("vault-a", PATH)) == ["SecretUploadRequested"]


async def test_an_upload_naming_no_store_goes_to_its_keys_store_after_the_default_changed(
    api: RunningApi,
) -> None:
    key = await api.issue_key(None, PATH)  # for vault-a, the default now
    await api.add_store({**VAULT_STORE, "name": "vault-c"})
    await api.call("POST", "/v1/stores/vault-c/default")
    body = api.upload_body(key)
    del body["store"]

    response = await api.call("POST", "/v1/secrets", json=body)

    assert response.status_code == 202, response.text
    assert await _events(api, "secret", secret_id("vault-a", PATH)) == ["SecretUploadRequested"]
    assert await _events(api, "secret", secret_id("vault-c", PATH)) == []


async def test_the_same_request_twice_gives_the_same_answer_and_one_upload(
    api: RunningApi,
) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(key)

    first = await api.call("POST", "/v1/secrets", json=body)
    again = await api.call("POST", "/v1/secrets", json=body)

    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert await _events(api, "secret", secret_id("vault-a", PATH)) == ["SecretUploadRequested"]


async def test_two_identical_requests_racing_make_one_upload(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(key)

    answers = await asyncio.gather(*(api.call("POST", "/v1/secrets", json=body) for _ in range(3)))

    assert [a.status_code for a in answers] == [202, 202, 202]
    assert len({a.text for a in answers}) == 1
    assert await _events(api, "secret", secret_id("vault-a", PATH)) == ["SecretUploadRequested"]
    assert await _events(api, "upload_key", key.key_id) == ["UploadKeyIssued", "UploadKeyClaimed"]


async def test_an_upload_id_reused_with_another_body_is_a_conflict(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(key)
    await api.call("POST", "/v1/secrets", json=body)
    other = api.upload_body(key, b"another value", upload_id=body["upload_id"])

    response = await api.call("POST", "/v1/secrets", json=other)

    assert response.status_code == 409
    assert "make a new upload id" in response.json()["detail"]
    assert await _events(api, "secret", secret_id("vault-a", PATH)) == ["SecretUploadRequested"]


async def test_a_used_key_is_refused(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", PATH)
    await api.call("POST", "/v1/secrets", json=api.upload_body(key))

    response = await api.call("POST", "/v1/secrets", json=api.upload_body(key))

    assert response.status_code == 409
    assert "used already" in response.json()["detail"]


async def test_a_key_issued_for_another_path_is_refused(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", "team-a/other")
    body = api.upload_body(key, path=PATH)

    response = await api.call("POST", "/v1/secrets", json=body)

    assert response.status_code == 409
    assert "another store or path" in response.json()["detail"]
    assert await _events(api, "secret", secret_id("vault-a", PATH)) == []


async def test_an_expired_or_unknown_key_is_refused(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    # Keys live one second, and no sweep destroys them meanwhile.
    async with api_with_rotator(
        broker,
        services,
        mongo_db_name,
        tmp_path,
        keyrotator_upload_key_lifetime=timedelta(seconds=1),
        keyrotator_sweep_interval=timedelta(hours=1),
    ) as api:
        await api.add_store(VAULT_STORE)
        expired = await api.issue_key("vault-a", PATH)
        await asyncio.sleep(1.5)

        late = await api.call("POST", "/v1/secrets", json=api.upload_body(expired))
        unknown = await api.call(
            "POST", "/v1/secrets", json=api.upload_body(expired, key_id="no-such-key")
        )

    assert late.status_code == 409
    assert "expired" in late.json()["detail"]
    assert unknown.status_code == 404
    assert "POST /v1/upload-keys" in unknown.json()["detail"]


async def test_uploads_to_unknown_or_inactive_stores_are_refused(api: RunningApi) -> None:
    await api.add_store(AWS_STORE)
    key = await api.issue_key("aws-b", PATH)
    await api.call("POST", "/v1/stores/aws-b/deactivate")

    inactive = await api.call("POST", "/v1/secrets", json=api.upload_body(key))
    unknown = await api.call("POST", "/v1/secrets", json=api.upload_body(key, store="nowhere"))

    assert inactive.status_code == 409
    assert "inactive" in inactive.json()["detail"]
    assert unknown.status_code == 404


async def test_a_user_may_not_write_outside_its_prefixes(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", "team-b/db")

    response = await api.call("POST", "/v1/secrets", who="alice", json=api.upload_body(key))

    assert response.status_code == 403
    assert "team-a/" in response.json()["detail"]
    assert await _events(api, "upload_key", key.key_id) == ["UploadKeyIssued"]


async def test_malformed_fields_are_named_and_their_values_never_echoed(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(
        key,
        nonce=base64.b64encode(b"short").decode(),
        client_public_key="not base64!",
        ciphertext="Y2lwaGVydGV4dC1zZWNyZXQ",  # unpadded: not canonical
        upload_id="not-a-uuid",
    )

    response = await api.call("POST", "/v1/secrets", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {
        "body.nonce",
        "body.client_public_key",
        "body.ciphertext",
        "body.upload_id",
    }
    for value in ("Y2lwaGVydGV4dC1zZWNyZXQ", "not base64!", "not-a-uuid"):
        assert value not in response.text


async def test_a_ciphertext_larger_than_the_largest_envelope_is_refused(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(key, ciphertext=base64.b64encode(bytes(90_000)).decode())

    response = await api.call("POST", "/v1/secrets", json=body)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.ciphertext"


async def test_a_stored_upload_shows_its_fingerprint_and_loses_its_ciphertext(
    api: RunningApi,
) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(key)
    await api.call("POST", "/v1/secrets", json=body)
    upload_id = body["upload_id"]

    await api.record_outcome(SecretStored(upload_id, "vault-a", "vault", PATH, "7", "fp1:abc"))
    status = await api.call("GET", f"/v1/uploads/{upload_id}?wait=20")

    assert status.json()["status"] == "stored"
    assert status.json()["fingerprint"] == "fp1:abc"
    assert status.json()["upstream_version"] == "7"

    # The API drops the ciphertext once it holds the final outcome.
    async def redacted() -> bool:
        doc = await api.recorder.events.find_one({"type": "SecretUploadRequested"})
        return doc is not None and from_document(doc).data["ciphertext"] is None

    await eventually(redacted)
    requested, _stored = await api.recorder.load("secret", secret_id("vault-a", PATH))
    assert requested.data["ciphertext_sha256"] == (
        hashlib.sha256(base64.b64decode(body["ciphertext"])).hexdigest()
    )


async def test_waiting_for_an_upload_returns_as_soon_as_it_settles(api: RunningApi) -> None:
    key = await api.issue_key("vault-a", PATH)
    body = api.upload_body(key)
    await api.call("POST", "/v1/secrets", json=body)
    upload_id = body["upload_id"]

    waiting = asyncio.create_task(api.call("GET", f"/v1/uploads/{upload_id}?wait=30"))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await api.record_outcome(
        SecretUploadRejected(upload_id, "vault-a", "vault", PATH, "binding", "path mismatch")
    )
    async with asyncio.timeout(15):
        answer = await waiting

    assert answer.json()["status"] == "rejected"
    assert answer.json()["reason"] == "binding"


async def test_a_wait_longer_than_the_servers_limit_ends_at_the_limit(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    limit = {"api_max_wait_seconds": 0.5}
    async with api_with_rotator(broker, services, mongo_db_name, tmp_path, api=limit) as api:
        await api.add_store(VAULT_STORE)
        body = api.upload_body(await api.issue_key("vault-a", PATH))
        await api.call("POST", "/v1/secrets", json=body)

        async with asyncio.timeout(10):
            answer = await api.call("GET", f"/v1/uploads/{body['upload_id']}?wait=3600")

    assert answer.status_code == 200
    assert answer.json()["status"] == "pending"


async def test_an_upload_whose_key_expired_before_any_outcome_is_expired(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    async with api_with_rotator(
        broker,
        services,
        mongo_db_name,
        tmp_path,
        keyrotator_upload_key_lifetime=timedelta(seconds=3),
        keyrotator_sweep_interval=timedelta(seconds=0.5),
    ) as api:
        await api.add_store(VAULT_STORE)
        body = api.upload_body(await api.issue_key("vault-a", PATH))
        accepted = await api.call("POST", "/v1/secrets", json=body)
        assert accepted.status_code == 202

        async def expired() -> bool:
            answer = await api.call("GET", f"/v1/uploads/{body['upload_id']}")
            return bool(answer.json()["status"] == "expired")

        await eventually(expired)


async def test_an_unknown_upload_is_not_found_at_once(api: RunningApi) -> None:
    response = await api.call("GET", "/v1/uploads/9b2f3c1e-0000-4000-8000-000000000000?wait=30")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_another_users_upload_is_not_found_for_a_user_who_may_not_write_its_path(
    api: RunningApi,
) -> None:
    body = api.upload_body(await api.issue_key("vault-a", "team-b/db", who="bob"))
    await api.call("POST", "/v1/secrets", who="bob", json=body)
    url = f"/v1/uploads/{body['upload_id']}"

    as_alice = await api.call("GET", f"{url}?wait=30", who="alice")  # and not held till settled
    as_bob = await api.call("GET", url, who="bob")
    as_admin = await api.call("GET", url)

    assert as_alice.status_code == 404
    assert as_alice.json()["detail"] == f"there is no upload {body['upload_id']}"
    assert as_bob.status_code == as_admin.status_code == 200


async def test_a_replica_waiting_for_an_upload_is_woken_by_another_replicas_projection(
    mongo: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> None:
    uploads = mongo[mongo_db_name][UPLOADS]
    # With several replicas the outcome may be projected elsewhere: a change stream wakes.
    settled = SettledUploads(uploads, replicas=2)
    assert not settled.live
    following = asyncio.create_task(settled.run())

    async def live() -> bool:
        return settled.live

    try:
        await eventually(live)
        with settled.waiting("u-1") as woken:
            # What another replica's projection writes: pending, then the outcome.
            await uploads.replace_one({"_id": "u-1"}, {"status": "pending"}, upsert=True)
            await uploads.replace_one({"_id": "u-1"}, {"status": "stored"}, upsert=True)
            async with asyncio.timeout(30):
                await woken.wait()
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert not settled.live


# --- the stage of a pending upload --------------------------------------------------------


async def _stage(api: RunningApi, upload_id: str, wait: float = 0) -> str | None:
    answer = await api.call("GET", f"/v1/uploads/{upload_id}?wait={wait:g}")
    assert answer.status_code == 200, answer.text
    stage: str | None = answer.json()["stage"]
    return stage


async def _accepted(api: RunningApi, path: str = PATH) -> str:
    """An upload accepted for `path` in vault-a, once the broker has it (no reactor runs
    here, so it stays pending); its upload id."""
    body = api.upload_body(await api.issue_key("vault-a", path))
    assert (await api.call("POST", "/v1/secrets", json=body)).status_code == 202

    async def published() -> bool:
        return await _stage(api, body["upload_id"]) not in (None, "accepted")

    await eventually(published)
    return str(body["upload_id"])


async def _hold_path(api: RunningApi, upload_id: str, path: str = PATH) -> None:
    """A reactor takes the path's lease for `upload_id`, as it does before it writes."""
    leases = path_leases.PathLeases(api.recorder.db, owner="reactor-under-test")
    now = datetime.now(UTC)
    until = now + timedelta(minutes=1)
    taken = await leases.take(secret_id("vault-a", path), upload_id, until, now)
    assert isinstance(taken, path_leases.Taken)


async def test_a_pending_upload_is_queued_then_written_and_a_settled_one_has_no_stage(
    api: RunningApi,
) -> None:
    upload_id = await _accepted(api)
    assert await _stage(api, upload_id) == "queued"
    await _hold_path(api, upload_id)

    assert await _stage(api, upload_id) == "writing"
    assert await _stage(api, upload_id, wait=0.2) == "writing"  # a short long-poll's answer too

    await api.record_outcome(SecretStored(upload_id, "vault-a", "vault", PATH, "1", "fp1:abc"))
    settled = await api.call("GET", f"/v1/uploads/{upload_id}?wait=20")
    assert settled.json()["status"] == "stored"
    assert settled.json()["stage"] is None


async def test_an_upload_behind_another_being_written_to_its_path_is_waiting(
    api: RunningApi,
) -> None:
    first = await _accepted(api)
    await _hold_path(api, first)
    second = await _accepted(api)

    assert await _stage(api, second) == "waiting"

    # Stored, the first keeps its lease until it runs out: it holds nobody up any more.
    await api.record_outcome(SecretStored(first, "vault-a", "vault", PATH, "1", "fp1:abc"))
    assert (await api.call("GET", f"/v1/uploads/{first}?wait=20")).json()["status"] == "stored"
    assert await _stage(api, second) == "queued"


async def test_an_upload_recorded_but_not_yet_published_is_accepted(
    api: RunningApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API's backstop publishes what is still unpublished `grace` after it was made
    # (by its event id's time, whatever a test sets): made longer than this test may take
    # on a loaded machine, it cannot republish the request under the asserts below.
    monkeypatch.setattr(api.context.runtime.relay, "grace", timedelta(hours=1))
    upload_id = await _accepted(api)

    async def projected() -> bool:
        return await api.recorder.db[UPLOADS].find_one({"_id": upload_id}) is not None

    await eventually(projected)  # or the projection could come after the delete below
    # As a crash between the commit and the push leaves it: unpublished and not projected.
    requested = {"type": "SecretUploadRequested", "data.upload_id": upload_id}
    await api.recorder.events.update_one(requested, {"$set": {"published": False}})
    await api.recorder.db[UPLOADS].delete_one({"_id": upload_id})

    assert await _stage(api, upload_id) == "accepted"

    await api.recorder.events.update_one(requested, {"$set": {"published": True}})
    assert await _stage(api, upload_id) == "queued"  # published, the read model not there yet
