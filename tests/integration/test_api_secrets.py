"""Reading what m8 knows about secrets: fingerprints, versions, history, never values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from m8.devservices import Services
from m8.domain import Secret, secret_id
from m8.domain.events import SecretStored
from m8.eventsourcing import Metadata
from tests.servers import Broker
from tests.support.api import (
    AWS_STORE,
    VAULT_STORE,
    RunningApi,
    api_settings,
    running_api,
)
from tests.support.events import eventually

REACTOR = Metadata(actor="reactor", correlation_id="corr-reactor")
VALUE = b"the-value-itself"


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with running_api(api_settings(broker, services, mongo_db_name, tmp_path)) as running:
        await running.add_store(VAULT_STORE)
        await running.add_store(AWS_STORE)
        yield running


async def _upload(api: RunningApi, store: str, path: str, stored_as: str | None) -> str:
    """An upload through the API, then (if `stored_as`) its outcome as a reactor records it."""
    key = await api.uploads.issue_key(store, path)
    body = api.upload_body(key, VALUE)
    response = await api.call("POST", "/v1/secrets", who="bob", json=body)
    assert response.status_code == 202
    if stored_as is not None:
        repository = api.context.runtime.repository
        secret = await repository.load(Secret, secret_id(store, path))
        store_type = key.store_type
        secret.record_stored(
            SecretStored(body["upload_id"], store, store_type, path, stored_as, f"fp1:{stored_as}")
        )
        await repository.save(secret, REACTOR)
    return str(body["upload_id"])


async def _projected(api: RunningApi, count: int) -> None:
    async def enough() -> bool:
        listed = await api.call("GET", "/v1/secrets")
        return len(listed.json()["secrets"]) >= count

    await eventually(enough)


async def test_secrets_are_listed_by_store_and_prefix(api: RunningApi) -> None:
    await _upload(api, "vault-a", "team-a/db", "1")
    await _upload(api, "vault-a", "team-b/db", "1")
    await _upload(api, "aws-b", "team-a/api", None)
    await _projected(api, 3)

    everything = (await api.call("GET", "/v1/secrets", who="bob")).json()
    in_vault = (await api.call("GET", "/v1/secrets?store=vault-a")).json()
    team_a = (await api.call("GET", "/v1/secrets?prefix=team-a/")).json()

    assert [(s["store"], s["path"]) for s in everything["secrets"]] == [
        ("aws-b", "team-a/api"),
        ("vault-a", "team-a/db"),
        ("vault-a", "team-b/db"),
    ]
    assert [s["path"] for s in in_vault["secrets"]] == ["team-a/db", "team-b/db"]
    assert [(s["store"], s["path"]) for s in team_a["secrets"]] == [
        ("aws-b", "team-a/api"),
        ("vault-a", "team-a/db"),
    ]
    pending = everything["secrets"][0]
    assert pending["fingerprint"] is None
    assert everything["secrets"][1]["fingerprint"] == "fp1:1"


async def test_secrets_come_a_page_at_a_time(api: RunningApi) -> None:
    for n in range(3):
        await _upload(api, "vault-a", f"p/{n}", None)
    await _projected(api, 3)

    first = (await api.call("GET", "/v1/secrets?limit=2")).json()
    rest = (await api.call("GET", f"/v1/secrets?limit=2&after={first['next_after']}")).json()

    assert [s["path"] for s in first["secrets"]] == ["p/0", "p/1"]
    assert [s["path"] for s in rest["secrets"]] == ["p/2"]
    assert rest["next_after"] is None


async def test_a_secret_shows_its_current_version_and_its_history(api: RunningApi) -> None:
    first = await _upload(api, "vault-a", "team-a/db/password", "1")
    second = await _upload(api, "vault-a", "team-a/db/password", "2")

    async def both_stored() -> bool:
        shown = await api.call("GET", "/v1/secrets/vault-a/team-a/db/password")
        return shown.status_code == 200 and shown.json()["upstream_version"] == "2"

    await eventually(both_stored)
    shown = (await api.call("GET", "/v1/secrets/vault-a/team-a/db/password")).json()
    history = await api.call("GET", "/v1/secrets/vault-a/team-a/db/password/history")

    assert shown["fingerprint"] == "fp1:2"
    assert shown["stored_by"] == "bob"
    entries = history.json()["history"]
    assert [(e["upload_id"], e["upstream_version"]) for e in entries] == [
        (first, "1"),
        (second, "2"),
    ]
    assert all(e["requested_by"] == "bob" and e["completed_at"] for e in entries)
    # Metadata only: neither the value nor anything of the ciphertext is shown.
    for answer in (str(shown), history.text):
        assert "ciphertext" not in answer
        assert VALUE.decode() not in answer


async def test_an_unknown_secret_is_not_found(api: RunningApi) -> None:
    shown = await api.call("GET", "/v1/secrets/vault-a/no/such/path")
    history = await api.call("GET", "/v1/secrets/vault-a/no/such/path/history")

    assert shown.status_code == history.status_code == 404
    assert "'no/such/path'" in shown.json()["detail"]
