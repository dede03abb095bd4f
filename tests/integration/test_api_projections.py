"""The API's read models: kept live per event, they equal a rebuild from the event store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from m8.api.projections import SECRETS, UPLOADS, SecretReadModels
from m8.devservices import Services
from m8.domain import UploadKey
from m8.domain.events import SecretStored, SecretUploadRejected
from m8.eventsourcing.recorder import VERSION_FIELD
from m8.eventstore import MongoEventRecorder
from tests.servers import Broker
from tests.support.api import (
    AWS_STORE,
    VAULT_STORE,
    RunningApi,
    api_settings,
    api_with_rotator,
    running_api,
)
from tests.support.events import eventually
from tests.support.uploads import ReactorKeys, Uploads, secret_value


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with api_with_rotator(broker, services, mongo_db_name, tmp_path) as running:
        await running.add_store(VAULT_STORE)
        await running.add_store(AWS_STORE)
        yield running


async def _upload(api: RunningApi, store: str, path: str) -> tuple[str, str]:
    """An upload through the API; its upload id and key id."""
    key = await api.issue_key(store, path)
    body = api.upload_body(key)
    assert (await api.call("POST", "/v1/secrets", json=body)).status_code == 202
    return str(body["upload_id"]), key.key_id


async def _read_models(api: RunningApi) -> dict[str, list[dict[str, Any]]]:
    db = api.recorder.db
    return {
        name: await db[name].find({}, {VERSION_FIELD: 0}).sort("_id").to_list()
        for name in (UPLOADS, SECRETS)
    }


async def _destroyed(api: RunningApi, key_id: str) -> bool:
    key = UploadKey.replay(
        key_id, (e.decode() for e in await api.recorder.load("upload_key", key_id))
    )
    return key.destroyed is not None


async def test_read_models_kept_per_event_equal_a_rebuild_from_the_event_store(
    api: RunningApi,
) -> None:
    path = "team-a/db"
    first, first_key = await _upload(api, "vault-a", path)
    await api.record_outcome(SecretStored(first, "vault-a", "vault", path, "1", "fp1:one"))
    second, second_key = await _upload(api, "vault-a", path)
    third, third_key = await _upload(api, "vault-a", path)
    await api.record_outcome(
        SecretUploadRejected(third, "vault-a", "vault", path, "bad_mac", "MAC")
    )
    await api.record_outcome(SecretStored(second, "vault-a", "vault", path, "2", "fp1:two"))
    pending, pending_key = await _upload(api, "aws-b", "team-b/db")
    expected = {first: "stored", second: "stored", third: "rejected", pending: "pending"}

    # Settled: every upload and secret projected, the rotator destroyed the used keys.
    async def settled() -> bool:
        models = await _read_models(api)
        statuses = {u["_id"]: u["status"] for u in models[UPLOADS]}
        versions = {s["_id"]: s["upstream_version"] for s in models[SECRETS]}
        return (
            statuses == expected
            and versions == {"aws-b:team-b/db": None, f"vault-a:{path}": "2"}
            and all([await _destroyed(api, k) for k in (first_key, second_key, third_key)])
            and not await _destroyed(api, pending_key)
        )

    await eventually(settled, timeout=60)
    shown = (await api.call("GET", f"/v1/secrets/vault-a/{path}")).json()
    history = (await api.call("GET", f"/v1/history/vault-a/{path}")).json()["history"]
    live = await _read_models(api)

    await SecretReadModels(api.recorder).rebuild()
    rebuilt = await _read_models(api)

    assert live == rebuilt
    assert (shown["fingerprint"], shown["upstream_version"]) == ("fp1:two", "2")
    assert [(e["upload_id"], e["status"]) for e in history] == [
        (first, "stored"),
        (second, "stored"),
        (third, "rejected"),
    ]


async def test_an_expired_upload_is_projected_so_and_a_rebuild_keeps_it(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    async with api_with_rotator(
        broker,
        services,
        mongo_db_name,
        tmp_path,
        keyrotator_upload_key_lifetime=timedelta(seconds=2),
        keyrotator_sweep_interval=timedelta(seconds=0.5),
    ) as api:
        await api.add_store(VAULT_STORE)
        upload_id, _ = await _upload(api, "vault-a", "team-a/late")

        async def expired() -> bool:
            upload = await api.recorder.db[UPLOADS].find_one({"_id": upload_id})
            return upload is not None and upload["status"] == "expired"

        await eventually(expired)
        view = (await api.call("GET", f"/v1/uploads/{upload_id}")).json()
        history = (await api.call("GET", "/v1/history/vault-a/team-a/late")).json()["history"]
        live = await _read_models(api)
        await SecretReadModels(api.recorder).rebuild()
        rebuilt = await _read_models(api)

    assert view["status"] == "expired"
    # The history's schema has no `expired`: it shows such an upload as pending, as before.
    assert [(e["upload_id"], e["status"], e["completed_at"]) for e in history] == [
        (upload_id, "pending", None)
    ]
    assert live == rebuilt


async def test_after_an_upgrade_an_upload_whose_key_expired_before_it_is_expired(
    broker: Broker,
    services: Services,
    mongo_db_name: str,
    tmp_path: Path,
    recorder: MongoEventRecorder,
) -> None:
    uploads = await Uploads.create(recorder, ReactorKeys.create(tmp_path), tmp_path)
    config = {k: v for k, v in VAULT_STORE.items() if k not in ("type", "name")}
    await uploads.register_store("vault-a", "vault", config)
    sent = await uploads.upload("vault-a", "team-a/old", secret_value())
    # As the older version left it: the upload projected while pending, then its key
    # destroyed as expired and published, which that version did not project; no marker.
    await SecretReadModels(recorder).handle(sent.event)
    assert await uploads.expire_keys() == 1
    await recorder.mark_published([e.event_id for e in await recorder.unpublished(100)])
    before = await recorder.db[UPLOADS].find_one({"_id": sent.upload_id})

    async with running_api(api_settings(broker, services, mongo_db_name, tmp_path)) as api:
        after = await recorder.db[UPLOADS].find_one({"_id": sent.upload_id})
        view = (await api.call("GET", f"/v1/uploads/{sent.upload_id}")).json()

    assert before is not None
    assert before["status"] == "pending"
    assert after is not None
    assert after["status"] == "expired"
    assert view["status"] == "expired"


# Uploads of the scale test, and how many go at once.
MANY = 200
AT_ONCE = 16


@pytest.mark.scale
@pytest.mark.timeout(900)
async def test_the_read_models_of_many_uploads_kept_per_event_equal_a_rebuild(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> None:
    """Two hundred uploads over forty paths, each stored or rejected, kept live by the
    projection: what it kept equals a rebuild, and each path shows its last stored value."""
    unlimited = {"api_upload_keys_per_minute": 10 * MANY, "api_uploads_per_minute": 10 * MANY}
    async with api_with_rotator(broker, services, mongo_db_name, tmp_path, api=unlimited) as api:
        await api.add_store(VAULT_STORE)
        paths = [f"team-{n % 40}/db" for n in range(MANY)]
        uploaded: list[tuple[str, str]] = []
        for start in range(0, MANY, AT_ONCE):
            batch = paths[start : start + AT_ONCE]
            ids = await asyncio.gather(*(_upload(api, "vault-a", path) for path in batch))
            uploaded += [(upload_id, path) for (upload_id, _), path in zip(ids, batch, strict=True)]
        for n, (upload_id, path) in enumerate(uploaded):
            if n % 3 == 2:
                await api.record_outcome(
                    SecretUploadRejected(upload_id, "vault-a", "vault", path, "bad_mac", "MAC")
                )
            else:
                await api.record_outcome(
                    SecretStored(upload_id, "vault-a", "vault", path, str(n), f"fp1:{n}")
                )
        last_stored = {path: str(n) for n, (_, path) in enumerate(uploaded) if n % 3 != 2}

        async def settled() -> bool:
            models = await _read_models(api)
            versions = {s["_id"]: s["upstream_version"] for s in models[SECRETS]}
            done = sum(u["status"] != "pending" for u in models[UPLOADS])
            return done == MANY and versions == {
                f"vault-a:{path}": version for path, version in last_stored.items()
            }

        await eventually(settled, timeout=300)
        live = await _read_models(api)
        await SecretReadModels(api.recorder).rebuild()

        assert await _read_models(api) == live
