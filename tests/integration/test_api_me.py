"""GET /v1/me: who the token is and where it may upload, as `m8ctl whoami` shows it.

Callers (tests/support/api.py): alice may write team-a/ in every store, dave team-a/ in
vault-a only, erin's entry names no prefixes and no stores, bob everything, nobody has no
role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from m8.devservices import Services
from tests.servers import Broker
from tests.support.api import AWS_STORE, VAULT_STORE, RunningApi, api_settings, running_api


@pytest.fixture
async def api(
    broker: Broker, services: Services, mongo_db_name: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    settings = api_settings(broker, services, mongo_db_name, tmp_path, api_public_docs=True)
    async with running_api(settings) as running:
        await running.add_store(VAULT_STORE)  # vault-a, the default
        await running.add_store(AWS_STORE)  # aws-b
        yield running


@pytest.mark.parametrize(
    ("who", "roles", "stores", "prefixes"),
    [
        ("admin", ["admin"], ["aws-b", "vault-a"], ["*"]),
        ("alice", ["user"], ["aws-b", "vault-a"], ["team-a/"]),
        ("dave", ["user"], ["vault-a"], ["team-a/"]),
        ("bob", ["user"], ["aws-b", "vault-a"], ["*"]),
        ("erin", ["user"], [], []),
    ],
)
async def test_me_names_the_caller_its_roles_and_where_it_may_upload(
    api: RunningApi, who: str, roles: list[str], stores: list[str], prefixes: list[str]
) -> None:
    answer = await api.call("GET", "/v1/me", who=who)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"subject": who, "roles": roles, "stores": stores, "prefixes": prefixes}


async def test_an_inactive_store_is_not_offered_to_anyone(api: RunningApi) -> None:
    assert (await api.call("POST", "/v1/stores/aws-b/deactivate")).status_code == 200
    for who in ("admin", "alice"):
        assert (await api.call("GET", "/v1/me", who=who)).json()["stores"] == ["vault-a"]


async def test_me_without_a_token_is_a_401_problem(api: RunningApi) -> None:
    answer = await api.client.get("/v1/me")
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == "urn:m8:problem:unauthorized"


async def test_me_for_a_caller_without_a_role_is_a_403_problem(api: RunningApi) -> None:
    answer = await api.call("GET", "/v1/me", who="nobody")
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_me_is_in_the_openapi_document_with_its_response_model(api: RunningApi) -> None:
    document = (await api.client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/me"]["get"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/MeView"}
    schema = document["components"]["schemas"]["MeView"]
    assert set(schema["required"]) == {"subject", "roles", "stores", "prefixes"}
    assert {"401", "403"} <= set(operation["responses"])
