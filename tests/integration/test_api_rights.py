"""Rights fail closed and name stores: a user writes (and sees) only its paths in its stores.

Callers (tests/support/api.py): alice may write team-a/ in every store, dave team-a/ in
vault-a only, erin's token entry names no prefixes and no stores, bob everything.
"""

from __future__ import annotations

import logging
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
    ENTRIES,
    VAULT_STORE,
    RunningApi,
    api_with_rotator,
    auth,
    write_token_file,
)
from tests.support.events import eventually

REACTOR = Metadata(actor="reactor", correlation_id="corr-reactor")


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    # The token file is looked at often, so a revocation shows quickly.
    overrides = {"api_token_file_check_seconds": 0.05}
    async with api_with_rotator(
        broker, services, mongo_db_name, tmp_path, api=overrides
    ) as running:
        await running.add_store(VAULT_STORE)  # vault-a, the default
        await running.add_store(AWS_STORE)  # aws-b
        yield running


async def _stored(api: RunningApi, store: str, path: str, fingerprint: str) -> str:
    """An upload by the admin, and its outcome as a reactor records it."""
    body = api.upload_body(await api.issue_key(store, path))
    assert (await api.call("POST", "/v1/secrets", json=body)).status_code == 202
    repository = api.context.runtime.repository
    secret = await repository.load(Secret, secret_id(store, path))
    store_type = "vault" if store == "vault-a" else "aws"
    secret.record_stored(SecretStored(body["upload_id"], store, store_type, path, "1", fingerprint))
    await repository.save(secret, REACTOR)
    return str(body["upload_id"])


async def test_a_token_entry_without_prefixes_or_stores_may_write_nothing(
    api: RunningApi,
) -> None:
    key = await api.call(
        "POST", "/v1/upload-keys", who="erin", json={"store": "vault-a", "path": "x"}
    )
    body = api.upload_body(await api.issue_key("vault-a", "x"))
    upload = await api.call("POST", "/v1/secrets", who="erin", json=body)

    assert key.status_code == upload.status_code == 403
    assert "allowed prefixes: none; allowed stores: none" in key.json()["detail"]


async def test_a_user_allowed_one_store_cannot_write_its_paths_into_another(
    api: RunningApi,
) -> None:
    allowed = await api.call(
        "POST", "/v1/upload-keys", who="dave", json={"store": "vault-a", "path": "team-a/x"}
    )
    elsewhere = await api.call(
        "POST", "/v1/upload-keys", who="dave", json={"store": "aws-b", "path": "team-a/x"}
    )
    # A key the admin got for aws-b does not let dave upload there either.
    body = api.upload_body(await api.issue_key("aws-b", "team-a/x"))
    upload = await api.call("POST", "/v1/secrets", who="dave", json=body)
    no_store_named = await api.call("POST", "/v1/secrets", who="dave", json={**body, "store": None})

    assert allowed.status_code == 201
    assert elsewhere.status_code == upload.status_code == no_store_named.status_code == 403
    assert "'aws-b'" in elsewhere.json()["detail"]
    assert "allowed stores: vault-a" in elsewhere.json()["detail"]
    events = await api.recorder.load("secret", secret_id("aws-b", "team-a/x"))
    assert events == []


async def test_a_key_request_naming_no_store_is_checked_on_the_default_store(
    api: RunningApi,
) -> None:
    in_default = await api.call("POST", "/v1/upload-keys", who="dave", json={"path": "team-a/x"})
    await api.call("POST", "/v1/stores/aws-b/default")
    default_moved = await api.call("POST", "/v1/upload-keys", who="dave", json={"path": "team-a/x"})

    assert in_default.status_code == 201
    assert in_default.json()["statement"]["store_id"] == "vault-a"
    assert default_moved.status_code == 403
    assert "'aws-b'" in default_moved.json()["detail"]


async def test_a_user_sees_secrets_and_uploads_only_in_its_stores(api: RunningApi) -> None:
    await _stored(api, "vault-a", "team-a/db", "fp1:in-vault")
    in_aws = await _stored(api, "aws-b", "team-a/db", "fp1:in-aws")

    async def both_projected() -> bool:
        listed = (await api.call("GET", "/v1/secrets")).json()["secrets"]
        return sum(1 for s in listed if s["fingerprint"]) == 2

    await eventually(both_projected)

    listed = (await api.call("GET", "/v1/secrets", who="dave")).json()
    asked_for = (await api.call("GET", "/v1/secrets?store=aws-b", who="dave")).json()
    shown = await api.call("GET", "/v1/secrets/aws-b/team-a/db", who="dave")
    history = await api.call("GET", "/v1/history/aws-b/team-a/db", who="dave")
    status = await api.call("GET", f"/v1/uploads/{in_aws}", who="dave")
    as_alice = (await api.call("GET", "/v1/secrets", who="alice")).json()

    assert [(s["store"], s["path"]) for s in listed["secrets"]] == [("vault-a", "team-a/db")]
    assert asked_for["secrets"] == []
    assert shown.status_code == history.status_code == status.status_code == 404
    assert "fp1:in-aws" not in shown.text + history.text + status.text
    assert len(as_alice["secrets"]) == 2  # stores ["*"]: every store


async def test_every_user_sees_the_names_of_every_active_store(api: RunningApi) -> None:
    listed = (await api.call("GET", "/v1/stores", who="dave")).json()

    assert [store["name"] for store in listed["stores"]] == ["aws-b", "vault-a"]


async def test_a_revoked_token_stops_working_without_a_restart(
    api: RunningApi, tmp_path: Path
) -> None:
    assert (await api.call("GET", "/v1/stores", who="alice")).status_code == 200

    write_token_file(tmp_path, [e for e in ENTRIES if e["subject"] != "alice"])

    async def refused() -> bool:
        response = await api.client.get("/v1/stores", headers=auth("alice"))
        return response.status_code == 401

    await eventually(refused, timeout=10)
    assert (await api.call("GET", "/v1/stores", who="bob")).status_code == 200


async def test_a_broken_new_token_file_keeps_the_tokens_in_force_and_is_logged(
    api: RunningApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="m8.api.auth")
    (tmp_path / "tokens.json").write_text('{"tokens": [{"sha256": "not a hash"')

    async def logged() -> bool:
        await api.client.get("/v1/stores", headers=auth("bob"))  # a request looks at the file
        return any("cannot be used" in record.message for record in caplog.records)

    await eventually(logged, timeout=10)
    assert (await api.call("GET", "/v1/stores", who="bob")).status_code == 200
    assert "not a hash" not in caplog.text
