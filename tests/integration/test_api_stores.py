"""The store catalog over HTTP (ADR-3 #APID1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from m8.devservices import Services
from m8.domain import CATALOG_ID
from tests.servers import Broker
from tests.support.api import (
    AWS_STORE,
    VAULT_STORE,
    RunningApi,
    api_settings,
    running_api,
)


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with running_api(api_settings(broker, services, mongo_db_name, tmp_path)) as running:
        yield running


async def test_first_store_registered_becomes_the_default(api: RunningApi) -> None:
    created = await api.call("POST", "/v1/stores", json=VAULT_STORE)
    second = await api.call("POST", "/v1/stores", json=AWS_STORE)

    assert created.status_code == 201
    assert created.json() == {
        "name": "vault-a",
        "type": "vault",
        "active": True,
        "default": True,
        "config": {
            "address": "https://vault.example.com:8200",
            "mount": "secret",
            "path_prefix": "m8/",
            "fingerprint_in_metadata": False,
        },
    }
    assert second.status_code == 201
    assert second.json()["default"] is False
    listed = (await api.call("GET", "/v1/stores", who="bob")).json()
    assert listed["default"] == "vault-a"
    assert [s["name"] for s in listed["stores"]] == ["aws-b", "vault-a"]


async def test_users_see_only_active_stores_and_admins_see_all(api: RunningApi) -> None:
    await api.add_store(VAULT_STORE)
    await api.add_store(AWS_STORE)
    deactivated = await api.call("POST", "/v1/stores/aws-b/deactivate")

    as_user = (await api.call("GET", "/v1/stores", who="bob")).json()
    as_admin = (await api.call("GET", "/v1/stores")).json()

    assert deactivated.status_code == 200
    assert deactivated.json()["active"] is False
    assert [s["name"] for s in as_user["stores"]] == ["vault-a"]
    assert {s["name"]: s["active"] for s in as_admin["stores"]} == {
        "aws-b": False,
        "vault-a": True,
    }
    reactivated = await api.call("POST", "/v1/stores/aws-b/activate")
    assert reactivated.json()["active"] is True


async def test_deactivating_the_default_needs_another_default_first(api: RunningApi) -> None:
    await api.add_store(VAULT_STORE)
    await api.add_store(AWS_STORE)

    refused = await api.call("POST", "/v1/stores/vault-a/deactivate")
    moved = await api.call("POST", "/v1/stores/aws-b/default")
    allowed = await api.call("POST", "/v1/stores/vault-a/deactivate")

    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert "make another store the default first" in refused.json()["detail"]
    assert moved.status_code == 200
    assert moved.json()["default"] is True
    assert allowed.status_code == 200
    assert (await api.call("GET", "/v1/stores")).json()["default"] == "aws-b"


async def test_a_store_body_with_a_credential_is_refused_and_nothing_is_stored(
    api: RunningApi,
) -> None:
    response = await api.call(
        "POST", "/v1/stores", json={**VAULT_STORE, "token": "hvs.do-not-echo-me"}
    )

    assert response.status_code == 422
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == ["body.vault.token"]
    assert "do-not-echo-me" not in response.text
    assert await api.recorder.load("secret_store", CATALOG_ID) == []


async def test_an_unknown_store_type_is_refused_without_echoing_it(api: RunningApi) -> None:
    response = await api.call("POST", "/v1/stores", json={**VAULT_STORE, "type": "pasted-value"})

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "body", "message": "must be one of 'vault', 'aws'"}
    ]
    assert "pasted-value" not in response.text


async def test_a_url_with_credentials_in_it_is_refused(api: RunningApi) -> None:
    response = await api.call(
        "POST", "/v1/stores", json={**VAULT_STORE, "address": "https://root:pw@vault:8200"}
    )

    assert response.status_code == 422
    assert "root:pw" not in response.text


async def test_store_changes_are_for_admins_only(api: RunningApi) -> None:
    await api.add_store(VAULT_STORE)

    register = await api.call("POST", "/v1/stores", who="bob", json=AWS_STORE)
    default = await api.call("POST", "/v1/stores/vault-a/default", who="alice")

    assert register.status_code == 403
    assert default.status_code == 403
    assert "admin" in register.json()["detail"]


async def test_unknown_and_duplicate_stores_are_named_in_the_answer(api: RunningApi) -> None:
    await api.add_store(VAULT_STORE)

    duplicate = await api.call("POST", "/v1/stores", json=VAULT_STORE)
    unknown = await api.call("POST", "/v1/stores/nowhere/activate")
    inactive_default = await api.call("POST", "/v1/stores/aws-b/default")

    assert duplicate.status_code == 409
    assert "exists already" in duplicate.json()["detail"]
    assert unknown.status_code == 404
    assert "'nowhere'" in unknown.json()["detail"]
    assert inactive_default.status_code == 404
